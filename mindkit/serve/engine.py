"""The engine: one step of the running batch over the model, identical on every rank.

The KV cache has ``rows`` rows (one per running request) and ``slots`` slots shared by all rows: every decode step
writes slot ``cursor`` of every row. A request joins between steps by prefilling its prompt alone into its own row
at the slots just before the cursor (its positions count from 0; ``key_valid`` marks only its slots), so it decodes
exactly as it would alone. When slots run short, ``shift`` moves every row left past the slots no running row
reads any more. Rank 0 decides each step as a ``Plan`` (see scheduler.py) and broadcasts it; every rank runs it.
"""
import dataclasses

import numpy as np
from mindspore import Tensor

from mindkit.generation.kv_cache import KVCache
from mindkit.generation.row_cache import row_views, shift_slots
from mindkit.parallel.collectives import all_gather_token_lists

STEP, STOP = 1, 0


@dataclasses.dataclass
class Plan:
    stop: bool = False
    shift: int = 0                                  # slots to move every row left, first
    decode: list = dataclasses.field(default_factory=list)    # (row, last token): written at the cursor
    cursor: int = 0                                 # the cursor after the decode; prompts end just before it
    prefills: list = dataclasses.field(default_factory=list)  # (row, prompt ids)

    @property
    def idle(self):
        return not (self.stop or self.shift or self.decode or self.prefills)

    def encode(self):
        out = [STOP if self.stop else STEP, self.shift, self.cursor, len(self.decode)]
        for row, token in self.decode:
            out += [row, token]
        out.append(len(self.prefills))
        for row, ids in self.prefills:
            out += [row, len(ids), *ids]
        return out

    @classmethod
    def decode_from(cls, ints):
        it = iter(int(i) for i in ints)
        kind, shift, cursor, n = next(it), next(it), next(it), next(it)
        decode = [(next(it), next(it)) for _ in range(n)]
        prefills = []
        for _ in range(next(it)):
            row, length = next(it), next(it)
            prefills.append((row, [next(it) for _ in range(length)]))
        return cls(kind == STOP, shift, decode, cursor, prefills)


def share_plan(plan, mesh):
    """Rank 0's plan on every rank (the others pass None)."""
    if mesh.world_size == 1:
        return plan
    got = all_gather_token_lists([plan.encode()] if mesh.is_main else [], mesh)
    return Plan.decode_from(got[0][0])


class Engine:
    def __init__(self, model, rows, slots, pad_token_id=0):
        self.model, self.rows, self.slots, self.pad = model, rows, slots, pad_token_id
        self.cache = KVCache.for_model(model, rows, slots)
        self.valid = np.zeros((rows, slots), np.bool_)   # key_valid: the slots each row's request wrote
        self.pos = np.zeros(rows, np.int32)              # each row's next RoPE position
        self.cursor = 0
        self.decode_steps = self.prefill_steps = 0

    def run(self, plan):
        """Run one step; returns ({row: logits} of the decoded rows, {row: logits} of the prefilled rows)."""
        if plan.shift:
            self._shift(plan.shift)
        decoded = self._decode(plan.decode) if plan.decode else {}
        prefilled = {}
        if plan.prefills:
            if plan.cursor < self.cursor or plan.cursor > self.slots:
                raise ValueError(f"plan cursor {plan.cursor} outside [{self.cursor}, {self.slots}]")
            self.cursor = plan.cursor
            for row, ids in plan.prefills:
                prefilled[row] = self._prefill(row, ids)
        return decoded, prefilled

    def _shift(self, lo):
        shift_slots(self.cache, lo, self.cursor)
        kept = self.cursor - lo
        self.valid[:, :kept] = self.valid[:, lo:self.cursor]
        self.valid[:, kept:] = False
        self.cursor = kept

    def _decode(self, rows_tokens):
        c = self.cursor
        if c >= self.slots:
            raise ValueError(f"decode at slot {c}: the cache has {self.slots} slots")
        ids = np.full((self.rows, 1), self.pad, np.int32)
        positions = np.zeros((self.rows, 1), np.int32)
        for row, token in rows_tokens:
            ids[row, 0], positions[row, 0] = token, self.pos[row]
            self.valid[row, c] = True
        logits = self.model(Tensor(ids), Tensor(positions), Tensor(self.valid), c, self.cache.layers).asnumpy()
        self.cursor = c + 1
        self.decode_steps += 1
        out = {}
        for row, _ in rows_tokens:
            self.pos[row] += 1
            out[row] = logits[row, -1]
        return out

    def _prefill(self, row, ids):
        n, c = len(ids), self.cursor
        if n > c:
            raise ValueError(f"a prompt of {n} tokens cannot end before slot {c}")
        self.valid[row] = False
        self.valid[row, c - n:c] = True
        logits = self.model(Tensor(np.asarray([ids], np.int32)), Tensor(np.arange(n, dtype=np.int32)[None]),
                            Tensor(self.valid[row:row + 1]), c - n, row_views(self.cache, row)).asnumpy()
        self.pos[row] = n
        self.prefill_steps += 1
        return logits[0, -1]
