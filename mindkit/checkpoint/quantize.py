"""Weight-only int8 by groups: each run of ``group_size`` consecutive inputs (default 32) of an (out, in) matrix gets
its own float32 scale and offset, W ≈ q * scale + offset, stored as ``X`` (int8), ``X_scale`` and ``X_offset``
((out, in / group_size) each) in an ordinary checkpoint.

Why groups of 32 with an offset: one scale per output row lets a few large weights coarsen the whole row, and the
real SmolLM2 then picks other greedy tokens than float32 on 3 of 5 reference prompts. Each group takes whichever of
symmetric (offset 0, scale max|w| / 127) or asymmetric (min..max onto -128..127) rounds it with the smaller error, so
weights that come from llama.cpp's block formats are reproduced exactly (up to float rounding): a Q4_1 block (32
weights d * q + m, q from 0 to 15) lands on int8 levels asymmetrically, a Q8_0 block (d * q) symmetrically. SmolLM2
(Q4_1 layers, Q8_0 embedding) then gives float32's greedy tokens on all 5 reference prompts; symmetric groups alone
on 3, asymmetric alone on 2, groups of 64 on 1. For any other float checkpoint it is the usual group-wise scheme:
1.25 bytes a weight (int8, and 8 bytes a group) instead of 4.

Quantized: the attention and feed-forward projections and the LM head, which is ``lm_head.weight`` or, in a tied
model (no ``lm_head.weight``), the embedding. A tied head is a large share of a small model's reads per token
(SmolLM2-135M: 28M of its 135M weights), so leaving it float would cap the speed-up; an untied model's embedding is
only gathered from, so it stays float. Norms stay float (tiny, and they scale activations directly)."""
import re

import numpy as np

QUANTIZED = re.compile(r"(\.(attention\.(wq|wk|wv|wo|w_qkv)|feed_forward\.(w1|w2|w3|w_gate_hidden))\.weight"
                       r"|^lm_head\.weight)$")
EMBEDDING = "model.tok_embeddings.embedding_weight"
SCALE, OFFSET = "_scale", "_offset"
GROUP_SIZE = 32


def quantize(w, group_size=GROUP_SIZE):
    """(out, in) float -> (int8 weight, float32 scale, float32 offset), scale and offset (out, in / group_size);
    |w - (q * scale + offset)| <= scale / 2 element-wise, up to float rounding."""
    w = np.asarray(w, np.float32)
    n, k = w.shape
    if group_size <= 0 or k % group_size:
        raise ValueError(f"group_size {group_size} does not divide the {k} input columns")
    groups = w.reshape(n, k // group_size, group_size)
    low, high = groups.min(-1), groups.max(-1)
    sym = _fit(groups, np.maximum(np.abs(low), np.abs(high)) / 127.0, np.zeros_like(low), -127, 127)
    step = (high - low) / 255.0
    asym = _fit(groups, step, low + 128.0 * step, -128, 127)
    use_sym = sym[3] <= asym[3]
    q, scale, offset = (np.where(use_sym, a, b) for a, b in zip(sym[:3], asym[:3]))
    return q.reshape(n, k), scale[..., 0], offset[..., 0]


def _fit(groups, scale, offset, lo, hi):
    """Round ``groups`` onto levels ``q * scale + offset``: (q, scale, offset, largest error per group), the last
    three with a trailing axis of 1. A group of equal values (scale 0) is its offset, or 0, exactly: q = 0."""
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)[..., None]
    offset = offset.astype(np.float32)[..., None]
    q = np.clip(np.rint((groups - offset) / scale), lo, hi).astype(np.int8)
    err = np.abs(q * scale + offset - groups).max(-1, keepdims=True)
    return q, scale, offset, err


def dequantize(q, scale, offset):
    """The float32 weight an int8 ``q`` with its group ``scale`` and ``offset`` stands for."""
    n, k = q.shape
    groups = q.reshape(n, scale.shape[1], -1).astype(np.float32)
    return (groups * scale[..., None] + offset[..., None]).reshape(n, k)


def quantized_names(state):
    """Which float tensors of ``state`` become int8 (see the module docstring)."""
    tied = EMBEDDING in state and "lm_head.weight" not in state
    return {k for k, v in state.items() if v is not None and np.asarray(v).dtype.kind == "f"
            and (QUANTIZED.search(k) or (tied and k == EMBEDDING))}


def quantize_state(state, names=None, group_size=GROUP_SIZE):
    """name -> array with the chosen weights (default ``quantized_names``) as int8 + ``<name>_scale`` and
    ``<name>_offset``; everything else as it is."""
    names = quantized_names(state) if names is None else names
    out = {}
    for name, value in state.items():
        if name in names:
            try:
                out[name], out[name + SCALE], out[name + OFFSET] = quantize(value, group_size)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        else:
            out[name] = value
    return out


def quantization_params(name, state):
    """For ``name`` of a weight's scale or offset in ``state``: that weight's name, else None."""
    for suffix in (SCALE, OFFSET):
        if name.endswith(suffix) and name[: -len(suffix)] in state:
            return name[: -len(suffix)]
    return None


def dequantize_state(state):
    """The inverse: each int8 ``X`` with its ``X_scale`` and ``X_offset`` back to float32 (not the original floats:
    rounding is lost)."""
    out = {k: v for k, v in state.items() if quantization_params(k, state) is None}
    for name in out:
        if name + SCALE in state:
            out[name] = dequantize(state[name], state[name + SCALE], state[name + OFFSET])
    return out


def is_quantized(state):
    return any(quantization_params(k, state) for k in state)
