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

from mindkit.errors import ConfigError
from mindkit.ops import decode_kernels
from mindkit.ops.int8_matmul import Int8MatMul, dequantize
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


def int8_params(shape, group_size):
    """An int8 weight of ``shape`` (out, in) and its float32 scale and offset per group of ``group_size`` inputs,
    (out, in / group_size) each (weight-only quantization, mindkit.checkpoint.quantize; not trained)."""
    if shape[1] % group_size:
        raise ConfigError("model.model_config.quant_group_size", group_size,
                          f"a divisor of the {shape[1]} input columns a weight holds here (with tensor parallelism, "
                          "of each rank's share: a split must fall on group boundaries)")
    groups = (shape[0], shape[1] // group_size)
    return (Parameter(initializer("zeros", shape, ms.int8), requires_grad=False),
            Parameter(initializer("ones", groups, ms.float32), requires_grad=False),
            Parameter(initializer("zeros", groups, ms.float32), requires_grad=False))


FEW_ROWS = 16  # a decode step's rows (its batch): what the few-row kernels of mindkit.ops.decode_kernels are for


def inference_kernel(kernel, training, x):
    """Whether ``kernel`` (a mindkit.ops op, or None where it cannot run) takes ``x``: float32 and out of training
    (the kernels have no gradient). Elementwise kernels (norm, SwiGLU) take any number of rows."""
    return kernel is not None and not training and x.dtype == ms.float32


def decode_kernel(kernel, training, x):
    """inference_kernel, for kernels made for a decode step: at most FEW_ROWS rows of x (prefill's many rows are
    faster on MindSpore's own multi-threaded ops)."""
    return inference_kernel(kernel, training, x) and x.size // x.shape[-1] <= FEW_ROWS


def decode_block(kernel, training, x, norm, residual):
    """Whether a decoder block's one-launch ``kernel`` may take ``x``: inference_kernel, with the float32 RMSNorm
    before the block and the residual after it given (the kernel computes both). Its projections decide the rest
    (Linear.folds)."""
    return (inference_kernel(kernel, training, x) and norm is not None and residual is not None
            and norm.fused is not None)


def few_rows_matmul(param_init_type, compute_dtype):
    """The decode-step x @ W^T kernel for float32 weights, else None."""
    return decode_kernels.matmul_t() if param_init_type == compute_dtype == "float32" else None


def matmul_t(matmul, few_rows, x, w, training):
    """x (M, K) @ w (N, K)^T: ``few_rows`` (see few_rows_matmul) for a decode step, bound by reading the weights,
    which it streams once on all cores; else MindSpore's MatMul."""
    return few_rows(x, w) if decode_kernel(few_rows, training, x) else matmul(x, w)


class Linear(nn.Cell, ParallelLayout):
    """y = x @ W^T (+ b) with W stored (out, in) as MindFormers does. ``split_axis`` 0: column-parallel (each rank
    computes out/tp outputs; with ``gather_output`` they are all-gathered, so every rank gets all ``out``); 1:
    row-parallel (each rank holds in/tp inputs, partial outputs are summed over the group; the bias, whole on every
    rank, is added after the sum). ``quant="int8"``: W is int8 with a float32 ``weight_scale`` and
    ``weight_offset`` per group of ``group_size`` inputs, split with W's rows or columns (computed in float32 by
    mindkit.ops.Int8MatMul)."""

    def __init__(self, in_features, out_features, param_init_type="float32", compute_dtype="float32",
                 split_axis=None, init_std=0.02, tp=TPGroup(), quant=None, has_bias=False, gather_output=False,
                 group_size=None):
        super().__init__()
        self.split_axis, self.tp = split_axis, tp
        if split_axis == 0:
            out_features = tp.local(out_features, "the output features")
        elif split_axis == 1:
            in_features = tp.local(in_features, "the input features")
        self.in_features, self.out_features = in_features, out_features
        self.gather = tp.all_gather() if gather_output and split_axis == 0 else None
        self.out_width = out_features * tp.size if self.gather is not None else out_features
        self.bias = Parameter(initializer("zeros", (out_features,), ms_dtype(param_init_type)),
                              name="bias") if has_bias else None
        self.quant = quant
        if quant == "int8":
            self.weight, self.weight_scale, self.weight_offset = int8_params((out_features, in_features), group_size)
            self.qmatmul = Int8MatMul()
        else:
            self.weight = Parameter(initializer(weight_init(init_std), (out_features, in_features),
                                                ms_dtype(param_init_type)), name="weight")
        self.compute_dtype = ms_dtype(compute_dtype)
        self.matmul = ops.MatMul(transpose_b=True)
        self.few_rows_matmul = few_rows_matmul(param_init_type, compute_dtype)
        self.reduce = tp.all_reduce() if split_axis == 1 else None
        # the residual is added inside the product when that is the last step (nothing reduced, biased or gathered)
        self.add_inside = tp.size == 1 and not has_bias and compute_dtype == "float32"

    def param_split_axes(self):
        # the group scales and offsets split with the weight; the bias follows the output rows (whole on every rank
        # when the inputs are split)
        axis = self.split_axis
        return {"weight": axis, "weight_scale": axis, "weight_offset": axis, "bias": 0 if axis == 0 else None}

    def folds(self, rows):
        """Whether a decode step's product of ``rows`` float32 rows may run inside a block's kernel (attention's, or
        a decoder layer's blocks: mindkit.ops.decode_kernels), as the few-row float32 product with nothing reduced,
        biased, gathered or adapted after it."""
        return (self.add_inside and self.quant is None and self.few_rows_matmul is not None and not self.training
                and rows <= FEW_ROWS)

    def construct(self, x, residual=None):
        """``residual`` (x's shape but ``out`` wide): returns residual + y."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        out_shape = shape[:-1] + (self.out_width,)
        inside = residual is not None and self.add_inside and residual.dtype == ms.float32 and not self.training
        if inside and self.quant is not None:
            return self.qmatmul(x, self.weight, self.weight_scale, self.weight_offset,
                                residual.reshape(-1, self.out_width)).reshape(out_shape)
        if inside and decode_kernel(self.few_rows_matmul, self.training, x):
            return self.few_rows_matmul(x, self.weight, residual.reshape(-1, self.out_width)).reshape(out_shape)
        if self.quant is None:
            y = matmul_t(self.matmul, self.few_rows_matmul, cast(x, self.compute_dtype),
                         cast(self.weight, self.compute_dtype), self.training)
        else:
            y = cast(self.qmatmul(x, self.weight, self.weight_scale, self.weight_offset), self.compute_dtype)
        if self.reduce is not None:
            y = self.reduce(y)
        if self.bias is not None:
            y = y + cast(self.bias, y.dtype)
        if self.gather is not None:  # (tp * N, out / tp) -> (N, out)
            y = self.gather(y).reshape(self.tp.size, -1, self.out_features).transpose(1, 0, 2)
            y = y.reshape(-1, self.out_width)
        y = y.reshape(out_shape)
        return y if residual is None else residual + cast(y, residual.dtype)


class Embedding(nn.Cell, ParallelLayout):
    """Token embedding, weight (vocab, hidden) named ``embedding_weight``, split over the vocabulary: each rank looks
    up the ids in its range and the group sums the rows. ``quant="int8"`` (for a tied model, whose embedding is also
    the LM head): int8 rows with a float32 ``embedding_weight_scale`` and ``embedding_weight_offset`` per group of
    ``group_size`` columns, split with the rows."""
    split_axis = 0

    def __init__(self, vocab_size, hidden_size, param_init_type="float32", init_std=0.02, tp=TPGroup(), quant=None,
                 group_size=None):
        super().__init__()
        self.tp = tp
        self.local_vocab = tp.local(vocab_size, "vocab_size")
        self.offset = tp.rank * self.local_vocab
        self.quant = quant
        if quant == "int8":
            self.embedding_weight, self.embedding_weight_scale, self.embedding_weight_offset = int8_params(
                (self.local_vocab, hidden_size), group_size)
        else:
            self.embedding_weight = Parameter(
                initializer(weight_init(init_std), (self.local_vocab, hidden_size), ms_dtype(param_init_type)),
                name="embedding_weight")
        self.reduce = tp.all_reduce()

    def rows(self, ids):
        weight = self.embedding_weight
        if self.quant is not None:
            return dequantize(ops.gather(weight, ids, 0), ops.gather(self.embedding_weight_scale, ids, 0),
                              ops.gather(self.embedding_weight_offset, ids, 0))
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
    """x / sqrt(mean(x^2) + eps) * weight; one fused kernel in float32 inference (see inference_kernel)."""

    def __init__(self, dim, eps=1e-5, param_init_type="float32", compute_type="float32"):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(initializer("ones", (dim,), ms_dtype(param_init_type)), name="weight")
        self.compute_type = ms_dtype(compute_type)
        float32 = param_init_type == compute_type == "float32"
        self.fused = decode_kernels.rms_norm() if float32 else None
        self.eps_tensor = Tensor([eps], ms.float32)

    def construct(self, x):
        if inference_kernel(self.fused, self.training, x):
            return self.fused(x, self.weight, self.eps_tensor)
        dtype = x.dtype
        x = cast(x, self.compute_type)
        var = ops.mean(ops.square(x), -1, keep_dims=True)
        x = x * ops.rsqrt(var + self.eps)
        return cast(x * cast(self.weight, self.compute_type), dtype)


class SwiGLU(nn.Cell):
    """silu(gate) * up of the (gate, up) pairs interleaved along the last axis of a fused gate/up projection's
    output; one fused kernel in float32 inference."""

    def __init__(self, float32=True):
        super().__init__()
        self.fused = decode_kernels.silu_mul_pairs() if float32 else None

    def construct(self, gu):
        if inference_kernel(self.fused, self.training, gu):
            return self.fused(gu)
        shape = gu.shape[:-1] + (gu.shape[-1] // 2,)
        gate, up = ops.split(gu.reshape(shape + (2,)), 1, axis=-1)
        return ops.silu(gate.reshape(shape)) * up.reshape(shape)


def _rope_pairs(rotary_dim, interleaved):
    """The (first, second) dims of each rotated pair: (i, i + rotary_dim/2) (rotate-half: Llama, HuggingFace) or
    (2i, 2i + 1) (interleaved: GLM2); pair i turns at frequency i."""
    i = np.arange(rotary_dim // 2)
    return (2 * i, 2 * i + 1) if interleaved else (i, i + rotary_dim // 2)


def rope_tables(head_dim, max_position, theta, rotary_dim=None, interleaved=False):
    """cos/sin tables (max_position, head_dim) for RoPE on the first ``rotary_dim`` dims of a head (all by
    default); the dims past it pass through (cos 1, sin 0)."""
    rotary_dim = rotary_dim or head_dim
    inv_freq = 1.0 / (theta ** (np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim))
    freqs = np.outer(np.arange(max_position, dtype=np.float64), inv_freq)
    cos, sin = np.ones((max_position, head_dim)), np.zeros((max_position, head_dim))
    for dims in _rope_pairs(rotary_dim, interleaved):
        cos[:, dims], sin[:, dims] = np.cos(freqs), np.sin(freqs)
    return Tensor(cos.astype(np.float32)), Tensor(sin.astype(np.float32))


def rope_partners(head_dim, rotary_dim=None, interleaved=False):
    """(partner, sign) per dim d of a head: RoPE turns x[d] into x[d] cos + sign[d] x[partner[d]] sin (rotate-half:
    concat(-x2, x1)); pass-through dims have sign 0."""
    first, second = _rope_pairs(rotary_dim or head_dim, interleaved)
    partner, sign = np.arange(head_dim, dtype=np.int32), np.zeros(head_dim, np.float32)
    partner[first], partner[second] = second, first
    sign[first], sign[second] = -1.0, 1.0
    return partner, sign


def rotate_half_matrix(head_dim, dtype=ms.float32, rotary_dim=None, interleaved=False):
    """R with x @ R = sign * x[partner] (``rope_partners``): one matmul instead of slices, a negation and a concat
    (exact: every output is one input times +-1 or 0)."""
    partner, sign = rope_partners(head_dim, rotary_dim, interleaved)
    r = np.zeros((head_dim, head_dim), np.float32)
    r[partner, np.arange(head_dim)] = sign
    return Tensor(r, dtype)


def rope_at(cos, sin, positions, rotary_dtype, compute_dtype):
    """The tables' rows at ``positions`` (B, L), as (B, L, 1, head_dim) to broadcast over heads."""
    B, L = positions.shape
    cos = cast(cast(ops.gather(cos, positions, 0).reshape(B, L, 1, -1), rotary_dtype), compute_dtype)
    sin = cast(cast(ops.gather(sin, positions, 0).reshape(B, L, 1, -1), rotary_dtype), compute_dtype)
    return cos, sin


def apply_rope(x, cos, sin, rot):
    """x: (..., hd); cos/sin broadcast against it; rot: rotate_half_matrix."""
    rotated = ops.matmul(x.reshape(-1, x.shape[-1]), rot).reshape(x.shape)
    return x * cos + rotated * sin
