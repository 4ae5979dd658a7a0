"""Building blocks in plain MindSpore ops (no fused Ascend kernels), so the same model runs on CPU, GPU and Ascend.

Each weight-holding layer declares, here and only here, how tensor parallelism splits each of its parameters (an axis
of the *full* parameter: 0 = split the output rows, 1 = split the input columns, None = replicated); weight sharding,
strategy files and checkpoint transforms are derived from it (mindkit.parallel.layout).
"""
import contextlib

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from mindkit.ops.int8_matmul import Int8MatMul
from mindkit.parallel.tensor_parallel import TPGroup

DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}


def ms_dtype(name):
    return DTYPES[name]


def cast(x, dtype):
    """``x`` as ``dtype``, without a copy (or a Cast op in a compiled graph) when it already is."""
    return x if x.dtype == dtype else x.astype(dtype)


_SKIP_RANDOM_INIT = [False]


@contextlib.contextmanager
def no_random_init():
    """Build layers with zero weights (instant) when a checkpoint will overwrite them; random normal init of a
    135M-parameter model costs ~4 s on CPU."""
    _SKIP_RANDOM_INIT[0] = True
    try:
        yield
    finally:
        _SKIP_RANDOM_INIT[0] = False


def weight_init(std):
    return "zeros" if _SKIP_RANDOM_INIT[0] else Normal(std)


class ParallelLayout:
    """How a layer's parameters are split over its tensor-parallel group ``tp``: ``split_axis`` None (replicated),
    0 (output rows) or 1 (input columns) of the full weight. Parameters hold this rank's slice. A layer whose
    parameters split differently overrides ``param_split_axes`` (local parameter name -> axis)."""
    split_axis = None
    tp = TPGroup()

    def param_split_axes(self):
        return {name: self.split_axis for name, _ in self.parameters_and_names(expand=False)}


def int8_params(shape):
    """An int8 weight of ``shape`` and its float32 scale per row (weight-only quantization; not trained)."""
    return (Parameter(initializer("zeros", shape, ms.int8), requires_grad=False),
            Parameter(initializer("ones", shape[:1], ms.float32), requires_grad=False))


class Linear(nn.Cell, ParallelLayout):
    """y = x @ W^T with W stored (out, in) as MindFormers does. ``split_axis`` 0: column-parallel (each rank computes
    out/tp outputs); 1: row-parallel (each rank holds in/tp inputs, partial outputs are summed over the group).
    ``quant="int8"``: W is int8 with a float32 ``weight_scale`` per output row, y = (x @ W^T) * scale (computed in
    float32 by mindkit.ops.Int8MatMul)."""

    def __init__(self, in_features, out_features, param_init_type="float32", compute_dtype="float32",
                 split_axis=None, init_std=0.02, tp=TPGroup(), quant=None):
        super().__init__()
        self.split_axis, self.tp = split_axis, tp
        if split_axis == 0:
            out_features = tp.local(out_features, "the output features")
        elif split_axis == 1:
            in_features = tp.local(in_features, "the input features")
        self.in_features, self.out_features = in_features, out_features
        self.quant = quant
        if quant == "int8":
            self.weight, self.weight_scale = int8_params((out_features, in_features))
            self.qmatmul = Int8MatMul()
        else:
            self.weight = Parameter(initializer(weight_init(init_std), (out_features, in_features),
                                                ms_dtype(param_init_type)), name="weight")
        self.compute_dtype = ms_dtype(compute_dtype)
        self.matmul = ops.MatMul(transpose_b=True)
        self.reduce = tp.all_reduce() if split_axis == 1 else None

    def param_split_axes(self):
        # the scale follows the output rows: split with them, whole on every rank when the inputs are split
        return {"weight": self.split_axis, "weight_scale": 0 if self.split_axis == 0 else None}

    def construct(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        if self.quant is None:
            y = self.matmul(cast(x, self.compute_dtype), cast(self.weight, self.compute_dtype))
        else:
            y = cast(self.qmatmul(x, self.weight, self.weight_scale), self.compute_dtype)
        if self.reduce is not None:
            y = self.reduce(y)
        return y.reshape(shape[:-1] + (self.out_features,))


class Embedding(nn.Cell, ParallelLayout):
    """Token embedding, weight (vocab, hidden) named ``embedding_weight``, split over the vocabulary: each rank looks
    up the ids in its range and the group sums the rows. ``quant="int8"`` (for a tied model, whose embedding is also
    the LM head): int8 rows with a float32 ``embedding_weight_scale`` per row, split with the rows."""
    split_axis = 0

    def __init__(self, vocab_size, hidden_size, param_init_type="float32", init_std=0.02, tp=TPGroup(), quant=None):
        super().__init__()
        self.tp = tp
        self.local_vocab = tp.local(vocab_size, "vocab_size")
        self.offset = tp.rank * self.local_vocab
        self.quant = quant
        if quant == "int8":
            self.embedding_weight, self.embedding_weight_scale = int8_params((self.local_vocab, hidden_size))
        else:
            self.embedding_weight = Parameter(
                initializer(weight_init(init_std), (self.local_vocab, hidden_size), ms_dtype(param_init_type)),
                name="embedding_weight")
        self.reduce = tp.all_reduce()

    def rows(self, ids):
        weight = self.embedding_weight
        if self.quant is not None:
            scale = ops.gather(self.embedding_weight_scale, ids, 0)
            return ops.gather(weight, ids, 0).astype(ms.float32) * scale.expand_dims(-1)
        if weight.dtype == ms.bfloat16:  # no bfloat16 Gather kernel on CPU
            return cast(ops.gather(cast(weight, ms.float32), ids, 0), ms.bfloat16)
        return ops.gather(weight, ids, 0)

    def construct(self, input_ids):
        if self.reduce is not None:
            local = input_ids - self.offset
            inside = ops.logical_and(local >= 0, local < self.local_vocab)
            rows = self.rows(ops.select(inside, local, ops.zeros_like(local)))
            return self.reduce(rows * inside.astype(rows.dtype).expand_dims(-1))
        return self.rows(input_ids)


class RMSNorm(nn.Cell, ParallelLayout):
    def __init__(self, dim, eps=1e-5, param_init_type="float32", compute_type="float32"):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(initializer("ones", (dim,), ms_dtype(param_init_type)), name="weight")
        self.compute_type = ms_dtype(compute_type)

    def construct(self, x):
        dtype = x.dtype
        x = cast(x, self.compute_type)
        var = ops.mean(ops.square(x), -1, keep_dims=True)
        x = x * ops.rsqrt(var + self.eps)
        return cast(x * cast(self.weight, self.compute_type), dtype)


def rope_tables(head_dim, max_position, theta):
    """cos/sin tables (max_position, head_dim) for rotate-half RoPE (pairs i and i + head_dim/2)."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    freqs = np.outer(np.arange(max_position, dtype=np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return Tensor(np.cos(emb).astype(np.float32)), Tensor(np.sin(emb).astype(np.float32))


def rotate_half_matrix(head_dim, dtype=ms.float32):
    """R with x @ R = concat(-x2, x1): rotate-half as one matmul instead of two slices, a negation and a concat
    (exact: every output is one input times +-1)."""
    half = head_dim // 2
    r = np.zeros((head_dim, head_dim), np.float32)
    r[np.arange(half) + half, np.arange(half)] = -1.0
    r[np.arange(half), np.arange(half) + half] = 1.0
    return Tensor(r, dtype)


def apply_rope(x, cos, sin, rot):
    """x: (..., hd); cos/sin broadcast against it; rot: rotate_half_matrix."""
    rotated = ops.matmul(x.reshape(-1, x.shape[-1]), rot).reshape(x.shape)
    return x * cos + rotated * sin
