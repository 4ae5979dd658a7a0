"""Runs a model's prefill and decode steps on a preallocated KV cache.

Op by op (PyNative, ``context.mode: 1``), or compiled by ``mindspore.jit`` (``context.mode: 0``). A compiled step
is fixed-shape, so prompts are left-padded to a multiple of ``prompt_bucket`` and caches come in buckets of
``slot_bucket`` slots; a cache is kept per (batch, slots) with its compiled steps, so each prefill length and each
decode shape compiles once while its bucket is kept (the ``max_buckets`` most recent); ``compile_seconds`` records
each shape's first-call time. A greedy step returns its argmax token ids (B ints, not B x vocab floats) and is a
graph of its own.
"""
import collections
import time

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from mindkit.generation.kv_cache import KVCache


class DecodeStep(nn.Cell):
    """The model on ``cache``: logits (B, L, vocab), or with ``greedy`` their argmax (B, L) int32."""

    def __init__(self, model, cache, greedy):
        super().__init__(auto_prefix=False)
        self.model, self.cache = model, cache
        self.argmax = ops.Argmax(-1, ms.int32) if greedy else None

    def construct(self, ids, positions, valid, slot):
        logits = self.model(ids, positions, valid, slot, self.cache.layers)
        return logits if self.argmax is None else self.argmax(logits)


class ModelRunner:
    def __init__(self, model, compiled=False, slot_bucket=64, prompt_bucket=32, max_buckets=4):
        # without a cache every step has a new shape; pipeline hand-offs run op by op (see models.causal_lm.Handoff)
        compiled = compiled and model.config.use_past and not getattr(model, "pipelined", False)
        self.model, self.compiled = model, compiled
        self.slot_bucket, self.max_buckets = slot_bucket, max_buckets
        self.prompt_bucket = prompt_bucket if compiled else 1
        self._buckets = collections.OrderedDict()   # (batch, slots) -> (cache, {greedy: step})
        # ("prefill", batch, prompt, slots) / ("decode", batch, slots), + ("greedy",) -> first call, s
        self.compile_seconds = {}
        self.cache = self._steps = self._key = None

    def prompt_slots(self, longest, new_tokens):
        """Prompt width after left padding: a bucket when compiled, so prefill shapes repeat, unless the bucket
        would cut into the ``new_tokens`` to generate within ``seq_length``."""
        width = -(-longest // self.prompt_bucket) * self.prompt_bucket
        return longest if width + new_tokens > self.model.config.seq_length else width

    def slots_for(self, needed):
        s = -(-needed // self.slot_bucket) * self.slot_bucket
        return min(s, self.model.config.seq_length)

    def begin(self, batch, slots):
        key = (batch, slots)
        if key not in self._buckets:
            if len(self._buckets) >= self.max_buckets:
                self._buckets.popitem(last=False)
            self._buckets[key] = (KVCache.for_model(self.model, batch, slots), {})
        self._buckets.move_to_end(key)
        self._key = key
        self.cache, self._steps = self._buckets[key]

    def prefill(self, ids, positions, valid, greedy=False):
        """Write slots [0, P) and return the last position's logits (B, vocab), or with ``greedy`` their argmax
        (B,), as numpy."""
        return self._run(np.ascontiguousarray(ids), np.ascontiguousarray(positions), valid, 0,
                         ("prefill",) + ids.shape + (self._key[1],), greedy)

    def decode(self, ids, positions, valid, slot, greedy=False):
        """Write slot ``slot`` (one token per row) and return its logits (B, vocab), or with ``greedy`` their argmax
        (B,), as numpy."""
        return self._run(np.ascontiguousarray(ids), np.ascontiguousarray(positions), valid,
                         Tensor(np.int32(slot)) if self.compiled else int(slot), ("decode",) + self._key, greedy)

    def _run(self, ids, positions, valid, start, shape_key, greedy):
        if greedy not in self._steps:
            step = DecodeStep(self.model, self.cache, greedy)
            self._steps[greedy] = ms.jit(step.construct) if self.compiled else step
        t0 = time.perf_counter()
        out = self._steps[greedy](Tensor(ids), Tensor(positions), Tensor(valid), start).asnumpy()[:, -1]
        if self.compiled:
            self.compile_seconds.setdefault(shape_key + ("greedy",) * greedy, time.perf_counter() - t0)
        return out
