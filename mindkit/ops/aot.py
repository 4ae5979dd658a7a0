"""Builds the C++ sources of ``mindkit/ops`` into shared libraries for MindSpore's ``ops.Custom(func_type="aot")``.

Each library is compiled with g++ on first use into ``$MINDKIT_CACHE_DIR`` (default ``~/.cache/mindkit``), named by
a hash of its source, the headers beside it and the flags, so an edited kernel is rebuilt and concurrent ranks never
load a half-written file. Without g++ or a CPU target, or with ``MINDKIT_KERNELS=0``, ``library`` returns None and
every caller runs its plain-MindSpore path instead.
"""
import functools
import hashlib
import logging
import os
import subprocess
import tempfile

import mindspore as ms
from mindspore import ops

logger = logging.getLogger("mindkit")
HERE = os.path.dirname(os.path.abspath(__file__))
BASE_FLAGS = ("-O3", "-std=c++20", "-fopenmp-simd", "-shared", "-fPIC", "-pthread")
VECTOR_ISA = ("avx2", "fma")


def cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return set()


@functools.lru_cache(maxsize=None)
def library(source, requires=()):
    """Path of ``source`` (a file name in mindkit/ops) compiled for this machine, or None (reason logged once).
    ``requires``: CPU flags the source needs (e.g. ("avx2", "fma")); those of ``VECTOR_ISA`` this CPU has are
    passed to g++ as ``-m<flag>`` either way."""
    if os.environ.get("MINDKIT_KERNELS", "1") == "0" or ms.get_context("device_target") != "CPU":
        return None
    if not set(requires) <= cpu_flags():
        logger.info("%s: this CPU lacks %s; using plain MindSpore ops", source, "/".join(requires))
        return None
    path = os.path.join(HERE, source)
    flags = list(BASE_FLAGS) + [f"-m{flag}" for flag in dict.fromkeys(VECTOR_ISA + tuple(requires))
                                    if flag in cpu_flags()]
    digest = hashlib.sha256(" ".join(flags).encode())
    for name in [source] + sorted(n for n in os.listdir(HERE) if n.endswith(".h")):  # the headers it may include
        with open(os.path.join(HERE, name), "rb") as f:
            digest.update(f.read())
    digest = digest.hexdigest()[:16]
    cache = os.environ.get("MINDKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mindkit")
    lib = os.path.join(cache, f"{os.path.splitext(source)[0]}_{digest}.so")
    if os.path.exists(lib):
        return lib
    tmp = None
    try:
        os.makedirs(cache, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
        os.close(fd)
        subprocess.run(["g++", *flags, "-o", tmp, path], check=True, capture_output=True, text=True, timeout=120)
        os.replace(tmp, lib)
    except (OSError, subprocess.SubprocessError) as e:
        detail = (getattr(e, "stderr", None) or str(e)).strip()
        logger.warning("%s: could not build (%s); using plain MindSpore ops", path,
                       detail.splitlines()[-1][:200] if detail else type(e).__name__)
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
        return None
    logger.info("built %s", lib)
    return lib


def set_threads(n):
    """Threads of the kernels' pool (thread_pool.h) in this process; effective before the first kernel runs."""
    os.environ["MINDKIT_KERNEL_THREADS"] = str(max(1, int(n)))


def custom_op(lib, symbol, out_shape, out_dtype):
    return ops.Custom(f"{lib}:{symbol}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot")
