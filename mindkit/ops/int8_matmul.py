"""y = x @ W^T with W int8 (out, in) and a float32 scale and offset per group of inputs (W ≈ q * scale + offset,
mindkit.checkpoint.quantize), for weight-only int8 models.

MindSpore's CPU MatMul has no int8-weight × float form: the plain path casts W to float every call, which reads and
writes 5x the bytes of W and is slower than keeping W in float32. On an x86 CPU with AVX2 and FMA, a small C++ kernel
(int8_matmul.cc, a Custom "aot" op, usable op by op and inside ``mindspore.jit``) reads W as int8 and converts it in
registers, sharing large calls with one helper thread (``MINDKIT_INT8_THREADS=1``: the calling thread only; the
file's header says how a busy second core is kept from stalling calls). It is compiled with g++ on first use into
``$MINDKIT_CACHE_DIR`` (default ``~/.cache/mindkit``), keyed by a hash of source and flags; ``scripts/setup.sh`` can
warm it with ``python3 -m mindkit.ops.int8_matmul``. Without g++, AVX2/FMA or a CPU target, or with
``MINDKIT_INT8_KERNEL=0``, the plain MindSpore path runs instead (same result up to float rounding).
"""
import functools
import hashlib
import logging
import os
import subprocess
import tempfile

import mindspore as ms
from mindspore import nn, ops

logger = logging.getLogger("mindkit")
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "int8_matmul.cc")
FLAGS = ["-O3", "-mavx2", "-mfma", "-std=c++20", "-pthread", "-shared", "-fPIC"]
SYMBOL = "Int8MatMul"


def _cpu_has(*flags):
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            words = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return False
    return all(flag in words for flag in flags)


@functools.lru_cache(maxsize=None)
def kernel_library():
    """Path of the compiled kernel, or None (with the reason logged once) when the fallback must be used."""
    if os.environ.get("MINDKIT_INT8_KERNEL", "1") == "0":
        return None
    if ms.get_context("device_target") != "CPU":
        return None
    if not _cpu_has("avx2", "fma"):
        logger.info("int8 matmul: this CPU lacks AVX2/FMA; using the plain MindSpore path")
        return None
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read() + " ".join(FLAGS).encode()).hexdigest()[:16]
    cache = os.environ.get("MINDKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mindkit")
    lib = os.path.join(cache, f"int8_matmul_{digest}.so")
    if os.path.exists(lib):
        return lib
    try:
        os.makedirs(cache, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
        os.close(fd)
        subprocess.run(["g++", *FLAGS, "-o", tmp, SOURCE], check=True, capture_output=True, text=True, timeout=120)
        os.replace(tmp, lib)  # atomic: concurrent ranks never load a half-written library
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        logger.warning("int8 matmul: could not build %s (%s); using the plain MindSpore path", SOURCE,
                       detail.strip().splitlines()[-1][:200] if detail.strip() else type(e).__name__)
        if "tmp" in locals() and os.path.exists(tmp):
            os.remove(tmp)
        return None
    logger.info("int8 matmul: built %s", lib)
    return lib


def dequantize(w, scale, offset):
    """int8 ``w`` (..., K) with ``scale`` and ``offset`` (..., K / group) -> float32 (..., K)."""
    groups = w.astype(ms.float32).reshape(scale.shape + (-1,))
    return (groups * scale.expand_dims(-1) + offset.expand_dims(-1)).reshape(w.shape)


class Int8MatMul(nn.Cell):
    """(x (M, K) float, w (N, K) int8, scale and offset (N, K / group) float32) -> (M, N) float32. The kernel needs
    a group size that is a multiple of 8 (LlamaConfig's quant_group_size is); the plain path takes any."""

    def __init__(self, use_kernel=True):
        super().__init__()
        lib = kernel_library() if use_kernel else None
        self.kernel = None if lib is None else ops.Custom(
            f"{lib}:{SYMBOL}", out_shape=lambda x, w, s, o: (x[0], w[0]), out_dtype=lambda x, w, s, o: ms.float32,
            func_type="aot")
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x, w, scale, offset):
        x = x if x.dtype == ms.float32 else x.astype(ms.float32)
        if self.kernel is not None:
            return self.kernel(x, w, scale, offset)
        return self.matmul(x, dequantize(w, scale, offset))


if __name__ == "__main__":
    ms.set_device("CPU")
    print(kernel_library() or "not built: the plain MindSpore path will be used")
