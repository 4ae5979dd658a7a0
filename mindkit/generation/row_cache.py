"""Row-level access to a batch KV cache, for continuous batching.

The model writes K/V at one slot range shared by every row of the cache it is given. A request joining a running
batch must be prefilled alone (batch 1) yet land in its own row of the shared cache: ``row_views`` hands the model
per-layer views that write one row and return that row. ``shift_slots`` moves every row's slots left, to reclaim
slots no running row reads any more. Both run op by op (PyNative), as the serving engine does.
"""
from mindspore import Tensor

from mindkit.models.layers import cast


class RowKV:
    """Looks like a ``LayerKV`` to the model, but reads and writes only row ``row`` of ``layer``."""
    whole = False

    def __init__(self, layer, row):
        self.layer, self.row = layer, row

    def write(self, k, v, start):
        """``k``/``v`` (1, kv_heads, L, hd) into this row at slots [start, start + L); returns the row's K and V
        (1, kv_heads, S, hd)."""
        if not isinstance(start, int):
            raise TypeError("RowKV writes run op by op: start must be an int")
        r, L = self.row, k.shape[2]
        self.layer.k[r:r + 1, :, start:start + L] = cast(k, self.layer.k.dtype)
        self.layer.v[r:r + 1, :, start:start + L] = cast(v, self.layer.v.dtype)
        return self.layer.k[r:r + 1], self.layer.v[r:r + 1]


def row_views(cache, row):
    """Per-layer views of ``cache`` (a KVCache) restricted to ``row``, to pass as the model's ``caches``."""
    if not 0 <= row < cache.batch:
        raise IndexError(f"row {row} outside the cache's {cache.batch} rows")
    return [RowKV(layer, row) for layer in cache.layers]


def shift_slots(cache, lo, end):
    """Move slots [lo, end) of every row to [0, end - lo). Slots past ``end - lo`` keep stale values: callers mark
    them invalid (key_valid) as they do for every slot not written by the current request."""
    lo, end = int(lo), int(end)
    if lo <= 0 or end <= lo:
        return
    for layer in cache.layers:
        for param in (layer.k, layer.v):
            moved = Tensor(param[:, :, lo:end].asnumpy())  # a copy: source and destination overlap
            param[:, :, 0:end - lo] = moved
