"""A preallocated KV cache: per layer, K and V Parameters of shape (B, kv_heads, slots, head_dim).

Parameters (not plain tensors) so a compiled decode step writes them in place. A cache is reused across requests
of the same (batch, slots) shape without clearing: every slot a step reads was written by the current request,
and slots past it are masked.
"""
import mindspore as ms
from mindspore import Parameter, nn, ops

from mindkit.models.layers import cast, ms_dtype

_counter = [0]


class LayerKV(nn.Cell):
    whole = True  # ``k``/``v`` are the whole cache, which a fused kernel may write in place (a RowKV view is not)

    def __init__(self, shape, dtype, uid):
        super().__init__()
        self.k = Parameter(ops.zeros(shape, dtype), name=f"kv_cache.{uid}.k", requires_grad=False)
        self.v = Parameter(ops.zeros(shape, dtype), name=f"kv_cache.{uid}.v", requires_grad=False)

    def write(self, k, v, start):
        """Store (B, kv_heads, L, hd) at slots [start, start + L); ``start`` is an int, or a scalar tensor when
        one token is written by a compiled step."""
        if isinstance(start, int):
            L = k.shape[2]
            self.k[:, :, start:start + L] = cast(k, self.k.dtype)
            self.v[:, :, start:start + L] = cast(v, self.v.dtype)
        else:
            self.k[:, :, start] = cast(k[:, :, 0], self.k.dtype)
            self.v[:, :, start] = cast(v[:, :, 0], self.v.dtype)
        return self.k, self.v


class KVCache(nn.Cell):
    def __init__(self, num_layers, batch, kv_heads, slots, head_dim, dtype=ms.float32):
        super().__init__(auto_prefix=False)
        _counter[0] += 1
        shape = (batch, kv_heads, slots, head_dim)
        self.batch, self.slots = batch, slots
        self.layers = nn.CellList([LayerKV(shape, dtype, f"{_counter[0]}.{i}") for i in range(num_layers)])

    @classmethod
    def for_model(cls, model, batch, slots):
        """The cache ``model`` reads and writes: its (pipeline stage's) layers, its KV heads on this rank."""
        return cls(model.cache_layers, batch, model.cache_kv_heads, slots, model.cache_head_dim,
                   ms_dtype(model.config.compute_dtype))
