"""Weight-only int8: each projection weight becomes int8 with one float32 scale per output row (symmetric,
scale = max|row| / 127), stored as ``X.weight`` (int8) and ``X.weight_scale`` in an ordinary checkpoint. Norms, the
embedding and the LM head stay float: they are a small share of a large model, and the tied head of a small one is
also its embedding."""
import re

import numpy as np

PROJECTIONS = re.compile(r"\.(attention\.(wq|wk|wv|wo|w_qkv)|feed_forward\.(w1|w2|w3|w_gate_hidden))\.weight$")


def quantize(w):
    w = np.asarray(w, np.float32)
    scale = np.abs(w).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8), scale


def quantize_state(state):
    """Projection weights to int8 + ``weight_scale``; everything else as it is."""
    out = {}
    for name, value in state.items():
        if PROJECTIONS.search(name) and value is not None and np.asarray(value).dtype.kind == "f":
            out[name], out[name + "_scale"] = quantize(value)
        else:
            out[name] = value
    return out


def dequantize_state(state):
    out = {k: v for k, v in state.items() if not k.endswith("weight_scale")}
    for name in [k for k in state if k.endswith("weight_scale")]:
        weight = name[: -len("_scale")]
        out[weight] = state[weight].astype(np.float32) * state[name][:, None]
    return out


def is_quantized(state):
    return any(k.endswith("weight_scale") for k in state)
