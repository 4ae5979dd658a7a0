"""An independent Llama forward in plain NumPy, written from the math (no mindkit code), for parity tests.

``weights`` uses MindFormers names (``model.tok_embeddings.embedding_weight``,
``model.layers.{i}.attention.wq.weight``, ..., ``model.norm_out.weight``, optional ``lm_head.weight``: without it the
embedding is the LM head). Linear weights are (out, in). Activations are computed in ``dtype`` (float64 by default;
float32 weights are upcast by NumPy).

``rope="half"`` rotates pairs (i, i + hd/2) (MindFormers/HuggingFace); ``rope="adjacent"`` rotates pairs (2i, 2i+1),
which is what llama.cpp's permuted GGUF Q/K rows expect.
"""
import numpy as np


def _rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, theta, style):
    """x: (heads, L, hd) at positions 0..L-1."""
    hd = x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)             # (hd/2,)
    ang = np.arange(x.shape[1], dtype=np.float64)[:, None] * inv_freq[None, :]          # (L, hd/2)
    cos, sin = np.cos(ang).astype(x.dtype), np.sin(ang).astype(x.dtype)
    if style == "half":
        a, b = x[..., :hd // 2], x[..., hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    if style == "adjacent":
        a, b = x[..., 0::2], x[..., 1::2]
        return np.stack([a * cos - b * sin, b * cos + a * sin], axis=-1).reshape(x.shape)
    raise ValueError(f"rope style {style!r}")


def _silu(x):
    return x / (1.0 + np.exp(-x))


def hidden_states(weights, ids, num_heads, n_kv_heads=None, rms_norm_eps=1e-5, theta=10000.0, rope="half",
                  dtype=np.float64):
    """Final-norm hidden states (L, hidden) for one unpadded sequence ``ids``."""
    W = lambda name: weights[name]  # noqa: E731
    n_kv = n_kv_heads or num_heads
    ids = np.asarray(ids, np.int64)
    x = W("model.tok_embeddings.embedding_weight")[ids].astype(dtype)                   # (L, H)
    L, H = x.shape
    hd, rep = H // num_heads, num_heads // n_kv
    causal = np.tril(np.ones((L, L), bool))
    i = 0
    while f"model.layers.{i}.attention_norm.weight" in weights:
        p = f"model.layers.{i}."
        h = _rms_norm(x, W(p + "attention_norm.weight"), rms_norm_eps)
        q = (h @ W(p + "attention.wq.weight").T).reshape(L, num_heads, hd).transpose(1, 0, 2)
        k = (h @ W(p + "attention.wk.weight").T).reshape(L, n_kv, hd).transpose(1, 0, 2)
        v = (h @ W(p + "attention.wv.weight").T).reshape(L, n_kv, hd).transpose(1, 0, 2)
        q, k = _rope(q, theta, rope), _rope(k, theta, rope)
        k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)  # query head j reads kv head j // rep
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        scores = np.where(causal, scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attn = (probs @ v).transpose(1, 0, 2).reshape(L, H)
        x = x + attn @ W(p + "attention.wo.weight").T
        h = _rms_norm(x, W(p + "ffn_norm.weight"), rms_norm_eps)
        ffn = _silu(h @ W(p + "feed_forward.w1.weight").T) * (h @ W(p + "feed_forward.w3.weight").T)
        x = x + ffn @ W(p + "feed_forward.w2.weight").T
        i += 1
    return _rms_norm(x, W("model.norm_out.weight"), rms_norm_eps)


def _head(weights):
    return weights.get("lm_head.weight", weights["model.tok_embeddings.embedding_weight"])


def forward(weights, ids, **hp):
    """Logits (L, vocab) for one unpadded sequence."""
    return hidden_states(weights, ids, **hp) @ _head(weights).T


def greedy(weights, ids, n, **hp):
    """``n`` greedy tokens, re-running the full forward (no cache) each step; returns the new ids only."""
    seq = [int(t) for t in ids]
    for _ in range(n):
        last = hidden_states(weights, seq, **hp)[-1]
        seq.append(int(np.argmax(last @ _head(weights).T)))
    return seq[len(ids):]
