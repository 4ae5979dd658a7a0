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


def top_k_top_p_filter(logits, top_k, top_p):
    logits = logits.astype(np.float64, copy=True)
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k][:, None]
        logits[logits < kth] = -np.inf
    if top_p < 1.0:
        order = np.argsort(-logits, axis=-1)
        sorted_logits = np.take_along_axis(logits, order, -1)
        probs = _softmax(sorted_logits)
        cum = np.cumsum(probs, axis=-1)
        drop = cum - probs >= top_p       # keep the smallest prefix whose mass reaches top_p (at least one token)
        sorted_logits[drop] = -np.inf
        np.put_along_axis(logits, order, sorted_logits, -1)
    return logits


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
        logits = top_k_top_p_filter(logits / cfg.temperature, cfg.top_k, cfg.top_p)
        probs = _softmax(logits)
        cum = np.cumsum(probs, -1)
        u = self.rng.random((probs.shape[0], 1)) * cum[:, -1:]
        return (cum <= u).sum(-1)  # lands on a token of positive probability, even for u == 0
