"""Weight-only int8: a matrix the model multiplies by every step becomes int8 with one float32 scale per output row
(symmetric, scale = max|row| / 127), stored as ``X`` (int8) and ``X_scale`` next to it in an ordinary checkpoint.

Quantized: the attention and feed-forward projections and the LM head, which is ``lm_head.weight`` or, in a tied
model (no ``lm_head.weight``), the embedding. A tied head is a large share of a small model's reads per token
(SmolLM2-135M: 28M of its 135M weights), so leaving it float would cap the speed-up; an untied model's embedding is
only gathered from, so it stays float. Norms stay float (tiny, and they scale activations directly)."""
import re

import numpy as np

QUANTIZED = re.compile(r"(\.(attention\.(wq|wk|wv|wo|w_qkv)|feed_forward\.(w1|w2|w3|w_gate_hidden))\.weight"
                       r"|^lm_head\.weight)$")
EMBEDDING = "model.tok_embeddings.embedding_weight"
SCALE = "_scale"


def quantize(w):
    """(out, in) float -> (int8 weight, float32 scale per row); |w - q * scale| <= scale / 2 element-wise."""
    w = np.asarray(w, np.float32)
    scale = np.abs(w).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # an all-zero row stays zero
    return np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8), scale


def quantized_names(state):
    """Which float tensors of ``state`` become int8 (see the module docstring)."""
    tied = EMBEDDING in state and "lm_head.weight" not in state
    return {k for k, v in state.items() if v is not None and np.asarray(v).dtype.kind == "f"
            and (QUANTIZED.search(k) or (tied and k == EMBEDDING))}


def quantize_state(state, names=None):
    """name -> array with the chosen weights (default ``quantized_names``) as int8 + ``<name>_scale``; everything
    else as it is."""
    names = quantized_names(state) if names is None else names
    out = {}
    for name, value in state.items():
        if name in names:
            out[name], out[name + SCALE] = quantize(value)
        else:
            out[name] = value
    return out


def dequantize_state(state):
    """The inverse: each int8 ``X`` with its ``X_scale`` back to float32 ``X * scale`` (not the original floats:
    rounding is lost)."""
    out = {k: v for k, v in state.items() if not (k.endswith(SCALE) and k[: -len(SCALE)] in state)}
    for name in state:
        if name.endswith(SCALE) and name[: -len(SCALE)] in state:
            weight = name[: -len(SCALE)]
            out[weight] = state[weight].astype(np.float32) * state[name][:, None]
    return out


def is_quantized(state):
    return any(k.endswith(SCALE) and k[: -len(SCALE)] in state for k in state)
