"""y = x @ w^T for float32 x (M, K) and a Linear weight w (N, K), as a MindSpore Custom AOT op (gemm.cc).

Prefill spends most of its time in this product, where MindSpore's CPU MatMul reaches about half of what a
cache-blocked AVX2 kernel does on the same cores (benchmarks/bench_gemm.py). The op runs op by op and inside
``mindspore.jit``; it has no gradient, so training keeps ``ops.MatMul``.
"""
import mindspore as ms

from mindkit.ops.aot import custom_op, library

SOURCE = "gemm.cc"


def gemm():
    """The op (x (M, K), w (N, K)) float32 -> x @ w^T (M, N) float32, threaded over MINDKIT_KERNEL_THREADS; None
    where it cannot be built (no g++, not a CPU target, ``MINDKIT_KERNELS=0``)."""
    lib = library(SOURCE)
    return None if lib is None else custom_op(lib, "Gemm", lambda x, w: [x[0], w[0]], lambda x, w: ms.float32)


if __name__ == "__main__":
    ms.set_device("CPU")
    print(library(SOURCE) or "not built: plain MindSpore ops will be used")
