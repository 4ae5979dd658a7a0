"""Fused ↔ separate projections, in MindFormers' (r1.5+) layout, which does not depend on ``model_parallel``:

- ``attention.w_qkv``: rows grouped per KV head g: [q heads of group g; k_g; v_g] for g = 0..n_kv-1.
- ``feed_forward.w_gate_hidden``: rows interleaved one by one: [w1_0; w3_0; w1_1; w3_1; ...].

Splitting either along its rows across tensor-parallel ranks keeps whole groups together, so a fused weight shards
like any column-parallel weight.
"""
import re

import numpy as np

QKV = ("attention.w_qkv.weight", ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight"))
FFN = ("feed_forward.w_gate_hidden.weight", ("feed_forward.w1.weight", "feed_forward.w3.weight"))


def fuse_qkv(wq, wk, wv, n_kv):
    cols = wq.shape[1:]
    return np.concatenate([wq.reshape(n_kv, -1, *cols), wk.reshape(n_kv, -1, *cols), wv.reshape(n_kv, -1, *cols)],
                          axis=1).reshape(-1, *cols)


def split_qkv(w, n_kv, q_rows, kv_rows):
    cols = w.shape[1:]
    g = w.reshape(n_kv, -1, *cols)
    q, kv = q_rows // n_kv, kv_rows // n_kv
    return (g[:, :q].reshape(q_rows, *cols), g[:, q:q + kv].reshape(kv_rows, *cols),
            g[:, q + kv:].reshape(kv_rows, *cols))


def fuse_ffn(w1, w3):
    return np.stack([w1, w3], axis=1).reshape(-1, *w1.shape[1:])


def split_ffn(w):
    g = w.reshape(-1, 2, *w.shape[1:])
    return g[:, 0], g[:, 1]


def _prefixes(names, suffix):
    pat = re.compile(r"^(.*\.)?" + re.escape(suffix) + "$")
    return [m.group(1) or "" for m in map(pat.match, names) if m]


def match_layout(state, expected_shapes, n_kv):
    """Return ``state`` with fused/separate projections rewritten to the names in ``expected_shapes``.
    Weights whose sizes do not add up are left alone for the caller's shape check to report."""
    state = dict(state)
    (qkv, (q, k, v)), (gh, (w1, w3)) = QKV, FFN
    for p in _prefixes(expected_shapes, qkv):
        if p + qkv not in state and all(p + n in state for n in (q, k, v)):
            state[p + qkv] = fuse_qkv(state.pop(p + q), state.pop(p + k), state.pop(p + v), n_kv)
    for p in _prefixes(expected_shapes, gh):
        if p + gh not in state and p + w1 in state and p + w3 in state:
            state[p + gh] = fuse_ffn(state.pop(p + w1), state.pop(p + w3))
    for p in _prefixes(expected_shapes, q):
        if p + q not in state and p + qkv in state:
            q_rows, kv_rows = expected_shapes[p + q][0], expected_shapes[p + k][0]
            if state[p + qkv].shape[0] == q_rows + 2 * kv_rows:
                state[p + q], state[p + k], state[p + v] = split_qkv(state.pop(p + qkv), n_kv, q_rows, kv_rows)
    for p in _prefixes(expected_shapes, w1):
        if p + w1 not in state and p + gh in state and state[p + gh].shape[0] == 2 * expected_shapes[p + w1][0]:
            state[p + w1], state[p + w3] = split_ffn(state.pop(p + gh))
    return state


def match_names(items, names):
    """Strategy ``items`` renamed to a checkpoint's ``names`` where it stores the projections fused and the model
    separate, or the other way round. Both forms split their rows the same way (whole KV groups per rank, w1/w3 rows
    in pairs), so a rank's fused slice is the fusion of its separate slices and the layout carries over unchanged."""
    items = dict(items)
    for fused, parts in (QKV, FFN):
        for p in _prefixes(items, fused):
            if p + fused not in names and all(p + n in names for n in parts):
                item = items.pop(p + fused)
                items.update({p + n: item for n in parts})
        for p in _prefixes(items, parts[0]):
            if p + parts[0] not in names and p + fused in names:
                items[p + fused] = items[p + parts[0]]
                for n in parts:
                    items.pop(p + n, None)
    return items
