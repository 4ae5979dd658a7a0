"""y = x @ W^T with W int8 (out, in) and a float32 scale and offset per group of inputs (W ≈ q * scale + offset,
mindkit.checkpoint.quantize), for weight-only int8 models.

MindSpore's CPU MatMul has no int8-weight × float form: the plain path casts W to float every call, which reads and
writes 5x the bytes of W and is slower than keeping W in float32. On an x86 CPU with AVX2 and FMA, a small C++ kernel
(int8_matmul.cc, a Custom "aot" op, usable op by op and inside ``mindspore.jit``) reads W as int8 and converts it in
registers, sharing large calls with one helper thread (``MINDKIT_KERNEL_THREADS=1``: the calling thread only; the
file's header says how a busy second core is kept from stalling calls). It is built on first use by mindkit.ops.aot.
Without g++, AVX2/FMA or a CPU target, or with ``MINDKIT_INT8_KERNEL=0`` (or ``MINDKIT_KERNELS=0``), the plain
MindSpore path runs instead (same result up to float rounding).
"""
import os

import mindspore as ms
from mindspore import nn, ops

from mindkit.ops.aot import custom_op, library

SYMBOL = "Int8MatMul"


def kernel_library():
    """Path of the compiled kernel, or None (reason logged once by mindkit.ops.aot) when the fallback must be used."""
    if os.environ.get("MINDKIT_INT8_KERNEL", "1") == "0":
        return None
    return library("int8_matmul.cc", requires=("avx2", "fma"))


def dequantize(w, scale, offset):
    """int8 ``w`` (..., K) with ``scale`` and ``offset`` (..., K / group) -> float32 (..., K)."""
    groups = w.astype(ms.float32).reshape(scale.shape + (-1,))
    return (groups * scale.expand_dims(-1) + offset.expand_dims(-1)).reshape(w.shape)


class Int8MatMul(nn.Cell):
    """(x (M, K) float, w (N, K) int8, scale and offset (N, K / group) float32[, residual (M, N) float32]) -> (M, N)
    float32 (+ residual, added in the kernel's launch). The kernel needs a group size that is a multiple of 8
    (LlamaConfig's quant_group_size is); the plain path takes any."""

    def __init__(self, use_kernel=True):
        super().__init__()
        lib = kernel_library() if use_kernel else None
        out_shape, out_dtype = (lambda x, w, *rest: (x[0], w[0])), (lambda *dtypes: ms.float32)
        self.kernel = None if lib is None else custom_op(lib, SYMBOL, out_shape, out_dtype)
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x, w, scale, offset, residual=None):
        x = x if x.dtype == ms.float32 else x.astype(ms.float32)
        if self.kernel is not None:
            return self.kernel(x, w, scale, offset) if residual is None else self.kernel(x, w, scale, offset, residual)
        y = self.matmul(x, dequantize(w, scale, offset))
        return y if residual is None else residual + y


if __name__ == "__main__":
    ms.set_device("CPU")
    print(kernel_library() or "not built: the plain MindSpore path will be used")
