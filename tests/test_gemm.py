"""The prefill GEMM kernel (mindkit/ops/gemm.cc) against a float64 reference: shapes that leave partial tiles in M
(6-row blocks), N (16-wide panels) and K (8-wide transposes, several K blocks), op by op, in a mindspore.jit function
and in a jit-compiled Cell, on one thread and on two (the pool's size is fixed per process: those run in a child)."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms
from mindspore import Parameter, nn

from mindkit.ops import aot, gemm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ms.set_device("CPU")
pytestmark = pytest.mark.skipif(aot.library(gemm.SOURCE) is None, reason="kernels cannot be built here")

EDGES = list(itertools.product([1, 5, 6, 7, 17, 33, 100], [1, 7, 9, 64, 300], [1, 15, 16, 17, 33, 100]))
LARGE = [(200, 1100, 70), (250, 2500, 300), (1000, 64, 50), (37, 576, 960), (300, 40, 2000), (1030, 130, 37)]
JIT = [(1, 1, 1), (7, 9, 17), (17, 576, 100), (100, 300, 33), (250, 2500, 300), (1000, 64, 50)]


def inputs(m, k, n, seed=0):
    rng = np.random.default_rng(seed + 1000 * m + 10 * k + n)
    return rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((n, k)).astype(np.float32)


def check(got, x, w):
    want = x.astype(np.float64) @ w.astype(np.float64).T
    assert got.shape == want.shape and got.dtype == np.float32
    err = np.abs(got - want).max() / np.sqrt(x.shape[1])  # summing K products of N(0, 1) values
    assert err < 1e-5, f"x {x.shape} w {w.shape}: max error {err:.2e} * sqrt(K)"


def check_shapes(run, shapes):
    for m, k, n in shapes:
        x, w = inputs(m, k, n)
        check(run(ms.Tensor(x), ms.Tensor(w)).asnumpy(), x, w)


class Linear(nn.Cell):
    """A layer as a model would use the kernel: (..., K) inputs, the weight a Parameter."""

    def __init__(self, w):
        super().__init__()
        self.weight = Parameter(ms.Tensor(w), name="weight")
        self.gemm = gemm.gemm()

    def construct(self, x):
        y = self.gemm(x.reshape(-1, x.shape[-1]), self.weight)
        return y.reshape(x.shape[:-1] + (self.weight.shape[0],))


def check_cell():
    for batch, seq, k, n in [(2, 9, 40, 33), (1, 300, 576, 130), (3, 1, 7, 1)]:
        x, w = inputs(batch * seq, k, n)
        cell = Linear(w)
        got = ms.jit(cell.construct)(ms.Tensor(x.reshape(batch, seq, k))).asnumpy()
        assert got.shape == (batch, seq, n)
        check(got.reshape(-1, n), x, w)


def kernel():
    op = gemm.gemm()

    def run(x, w):
        return op(x, w)
    return run


@pytest.mark.parametrize("shapes", [EDGES, LARGE], ids=["edges", "large"])
def test_op_by_op(shapes):
    check_shapes(gemm.gemm(), shapes)


def test_jit_function():
    check_shapes(ms.jit(kernel()), JIT)


def test_jit_cell():
    check_cell()


def test_repeated_calls_reuse_scratch():
    """Scratch buffers are kept per thread between calls: a small call after a large one, and back."""
    op = gemm.gemm()
    for m, k, n in [(300, 2500, 400), (5, 7, 3), (300, 2500, 400)]:
        x, w = inputs(m, k, n, seed=1)
        check(op(ms.Tensor(x), ms.Tensor(w)).asnumpy(), x, w)


def test_empty_dimensions():
    op = gemm.gemm()
    for m, k, n in [(0, 5, 4), (3, 0, 4), (3, 5, 0)]:
        got = op(ms.Tensor(np.ones((m, k), np.float32)), ms.Tensor(np.ones((n, k), np.float32))).asnumpy()
        np.testing.assert_array_equal(got, np.zeros((m, n), np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_counts(threads):
    env = dict(os.environ, MINDKIT_KERNEL_THREADS=str(threads), PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout[-2000:] + done.stderr[-2000:]


if __name__ == "__main__":  # the child of test_thread_counts
    check_shapes(gemm.gemm(), EDGES + LARGE)
    check_shapes(ms.jit(kernel()), JIT)
    check_cell()
    print("ok")
