"""An independent ChatGLM2 forward in plain NumPy, written from the published network (no mindkit code), for parity
tests.

``weights`` uses MindFormers names: ``transformer.embedding.embedding_weight``,
``transformer.encoder.layers.{i}.input_layernorm.weight``, ``...self_attention.query_key_value.weight`` / ``.bias``
(rows [q: heads * kv_channels; k: groups * kv_channels; v: groups * kv_channels]), ``...self_attention.dense.weight``,
``...post_attention_layernorm.weight``, ``...mlp.dense_h_to_4h.weight`` (rows [gate; up]), ``...mlp.dense_4h_to_h
.weight``, ``transformer.encoder.final_layernorm.weight``, ``transformer.output_layer.weight``; any ``.bias`` next to a
weight is added. RoPE: the first kv_channels/2 dims of every head, pairs (2i, 2i+1), frequency base ** (-4i /
kv_channels); the other half passes through.
"""
import numpy as np


def _rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, base):
    """x: (heads, L, hd) at positions 0..L-1."""
    hd = x.shape[-1]
    rot = hd // 2
    inv_freq = 1.0 / base ** (np.arange(0, rot, 2, dtype=np.float64) / rot)            # (rot/2,)
    ang = np.arange(x.shape[1], dtype=np.float64)[:, None] * inv_freq[None, :]          # (L, rot/2)
    cos, sin = np.cos(ang), np.sin(ang)
    out = x.copy()
    a, b = x[..., 0:rot:2], x[..., 1:rot:2]
    out[..., 0:rot:2] = a * cos - b * sin
    out[..., 1:rot:2] = b * cos + a * sin
    return out


def _linear(weights, name, x):
    y = x @ weights[name + ".weight"].T
    return y + weights[name + ".bias"] if name + ".bias" in weights else y


def hidden_states(weights, ids, num_heads, groups, kv_channels, eps=1e-5, rope_ratio=1.0):
    """Final-norm hidden states (L, hidden) for one unpadded sequence ``ids``."""
    ids = np.asarray(ids, np.int64)
    x = weights["transformer.embedding.embedding_weight"][ids].astype(np.float64)
    L, hd = len(ids), kv_channels
    causal = np.tril(np.ones((L, L), bool))
    i = 0
    while f"transformer.encoder.layers.{i}.input_layernorm.weight" in weights:
        p = f"transformer.encoder.layers.{i}."
        h = _rms_norm(x, weights[p + "input_layernorm.weight"], eps)
        qkv = _linear(weights, p + "self_attention.query_key_value", h)
        q = qkv[:, :num_heads * hd].reshape(L, num_heads, hd).transpose(1, 0, 2)
        k = qkv[:, num_heads * hd:(num_heads + groups) * hd].reshape(L, groups, hd).transpose(1, 0, 2)
        v = qkv[:, (num_heads + groups) * hd:].reshape(L, groups, hd).transpose(1, 0, 2)
        q, k = _rope(q, 10000.0 * rope_ratio), _rope(k, 10000.0 * rope_ratio)
        per_group = num_heads // groups
        k, v = np.repeat(k, per_group, axis=0), np.repeat(v, per_group, axis=0)  # head j reads group j // per_group
        scores = np.where(causal, q @ k.transpose(0, 2, 1) / np.sqrt(hd), -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + _linear(weights, p + "self_attention.dense", (probs @ v).transpose(1, 0, 2).reshape(L, -1))
        h = _rms_norm(x, weights[p + "post_attention_layernorm.weight"], eps)
        gate, up = np.split(_linear(weights, p + "mlp.dense_h_to_4h", h), 2, axis=-1)
        x = x + _linear(weights, p + "mlp.dense_4h_to_h", gate / (1.0 + np.exp(-gate)) * up)
        i += 1
    return _rms_norm(x, weights["transformer.encoder.final_layernorm.weight"], eps)


def forward(weights, ids, **hp):
    """Logits (L, padded vocab) for one unpadded sequence."""
    return hidden_states(weights, ids, **hp) @ weights["transformer.output_layer.weight"].T


def greedy(weights, ids, n, **hp):
    """``n`` greedy tokens, re-running the full forward (no cache) each step; returns the new ids only."""
    seq = [int(t) for t in ids]
    for _ in range(n):
        seq.append(int(np.argmax(forward(weights, seq, **hp)[-1])))
    return seq[len(ids):]
