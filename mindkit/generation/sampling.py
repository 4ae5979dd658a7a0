"""Pick the next token per row from last-position logits (numpy, (B, V)): repetition penalty, temperature,
top-k, top-p, then greedy argmax or a draw from a seeded generator. HF/MindFormers semantics."""
import numpy as np


def apply_repetition_penalty(logits, seen, penalty):
    """``seen``: per row, the token ids already in the sequence (prompt + generated)."""
    if penalty == 1.0:
        return logits
    logits = logits.copy()
    for row, ids in enumerate(seen):
        ids = np.fromiter(ids, dtype=np.int64) if not isinstance(ids, np.ndarray) else ids
        vals = logits[row, ids]
        logits[row, ids] = np.where(vals > 0, vals / penalty, vals * penalty)
    return logits


def kept_tokens(row, top_k, top_p):
    """The token ids (ascending) that top-k keeps of one row of float64 logits (ties with the k-th kept), and top-p
    then keeps of those: the smallest prefix, by probability renormalised over them (ties: lower ids first), whose
    mass reaches ``top_p`` (at least one token). Linear in the vocabulary (partitions, not a sort): only the few
    candidates are sorted."""
    vocab = row.shape[-1]
    ids = np.flatnonzero(row >= np.partition(row, -top_k)[-top_k]) if 0 < top_k < vocab else np.arange(vocab)
    if top_p >= 1.0:
        return ids
    probs, width = _softmax(row[ids]), 64
    while True:  # the `width` most probable (and their ties), widened until their mass reaches top_p
        top = np.flatnonzero(probs >= np.partition(probs, -width)[-width]) if width < len(ids) else np.arange(len(ids))
        top = top[np.argsort(-probs[top], kind="stable")]
        cum = np.cumsum(probs[top])
        if cum[-1] >= top_p or len(top) == len(ids):
            break
        width *= 8
    return np.sort(ids[top[cum - probs[top] < top_p]])


def top_k_top_p_filter(logits, top_k, top_p):
    """(B, V) logits as float64 with what kept_tokens drops at -inf."""
    logits = np.asarray(logits, np.float64)
    out = np.full(logits.shape, -np.inf)
    for r, row in enumerate(logits):
        ids = kept_tokens(row, top_k, top_p)
        out[r, ids] = row[ids]
    return out


def _softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


class Sampler:
    def __init__(self, gen_config):
        self.cfg = gen_config
        self.rng = np.random.default_rng(gen_config.seed)
        # the argmax of the raw logits, which the step itself can take (ModelRunner's ``greedy``)
        self.greedy = not gen_config.do_sample and gen_config.repetition_penalty == 1.0

    def __call__(self, logits, seen):
        cfg = self.cfg
        logits = apply_repetition_penalty(np.asarray(logits, np.float32), seen, cfg.repetition_penalty)
        if not cfg.do_sample:
            return logits.argmax(-1)
        scaled = (logits / cfg.temperature).astype(np.float64)
        u = self.rng.random((len(scaled), 1))
        tokens = np.empty(len(scaled), np.int64)
        for r, row in enumerate(scaled):
            ids = kept_tokens(row, cfg.top_k, cfg.top_p)
            cum = np.cumsum(_softmax(row[ids]))
            # the first token whose cumulative mass passes u: one of positive probability, even for u == 0
            tokens[r] = ids[min(int((cum <= u[r, 0] * cum[-1]).sum()), len(ids) - 1)]
        return tokens
