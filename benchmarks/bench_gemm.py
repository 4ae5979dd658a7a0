"""GFLOPS of y = x @ w^T (float32, w a Linear weight (N, K)) on prefill shapes: mindkit's gemm kernel
(mindkit/ops/gemm.cc), MindSpore's ops.MatMul(transpose_b=True), and torch.nn.functional.linear when torch is
importable, all on the same number of threads.

Each implementation runs in a child process of its own (the thread pools of MindSpore, torch and mindkit spin
after each call and would slow each other down in one process), twice in turns, each time calling for a while
per shape; a shape's figure is the best call (on a shared machine the best of a few calls is rarely a quiet one).
Each child checks its results against numpy. Prints a table, then one JSON line.

    python benchmarks/bench_gemm.py
    python benchmarks/bench_gemm.py --threads 1 --shapes 1024,576,960 17,576,960
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = ["1024,576,960", "1024,576,3072", "1024,1536,576", "1024,576,576", "1024,576,49152",  # SmolLM2 prefill
          "17,576,960", "128,576,3072", "4096,576,576"]
IMPLS = ["mindkit", "mindspore", "torch"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=SHAPES, help="M,K,N for x (M, K) and w (N, K)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=1.5,
                   help="time spent calling each implementation per shape and turn (at least 5 calls)")
    p.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)  # a child: time this one, print JSON
    return p.parse_args()


def shape_of(text):
    return tuple(int(v) for v in text.split(","))


def best_time(fn, seconds, min_calls=5):
    """Best wall time of ``fn()`` over calls for ``seconds`` (and at least ``min_calls``), after a warm-up."""
    fn()
    best, calls, end = float("inf"), 0, time.perf_counter() + seconds
    while calls < min_calls or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        best, calls = min(best, time.perf_counter() - t0), calls + 1
    return best


def implementation(name, threads):
    """(x, w) numpy -> (a call to time, its result as numpy)."""
    if name == "torch":
        import torch
        torch.set_num_threads(threads)

        def prepare(x, w):
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)
            return lambda: torch.nn.functional.linear(tx, tw), lambda out: out.numpy()
        return prepare
    os.environ["MINDKIT_KERNEL_THREADS"] = str(threads)  # before the kernel's thread pool starts
    import mindspore as ms
    from mindspore import ops
    ms.set_device("CPU")
    ms.set_context(runtime_num_threads=threads)
    ms.runtime.launch_blocking()  # a call returns when its kernel is done
    if name == "mindkit":
        sys.path.insert(0, REPO)
        from mindkit.ops.gemm import gemm
        op = gemm()
        if op is None:
            sys.exit("mindkit's gemm kernel cannot be built here (see the log above)")
    else:
        op = ops.MatMul(transpose_b=True)

    def prepare(x, w):
        mx, mw = ms.Tensor(x), ms.Tensor(w)
        return lambda: op(mx, mw), lambda out: out.asnumpy()
    return prepare


def child(args):
    prepare = implementation(args.impl, args.threads)
    seconds = {}
    for shape in args.shapes:
        m, k, n = shape_of(shape)
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal((m, k), np.float32), rng.standard_normal((n, k), np.float32)
        call, to_numpy = prepare(x, w)
        err = np.abs(to_numpy(call()) - x @ w.T).max() / np.sqrt(k)
        if not err < 1e-4:
            sys.exit(f"{args.impl} {shape}: max error {err:.2e} * sqrt(K)")
        seconds[shape] = best_time(call, args.seconds)
    print(json.dumps(seconds))


def main():
    args = parse_args()
    if args.impl:
        return child(args)
    names = [n for n in IMPLS if n != "torch" or importlib.util.find_spec("torch")]
    best = {name: {shape: float("inf") for shape in args.shapes} for name in names}
    for _ in range(2):
        for name in names:
            done = subprocess.run([sys.executable, __file__, "--impl", name, "--threads", str(args.threads),
                                   "--seconds", str(args.seconds), "--shapes", *args.shapes],
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            for shape, t in json.loads(done.stdout.strip().splitlines()[-1]).items():
                best[name][shape] = min(best[name][shape], t)
    print(f"GFLOPS, {args.threads} thread(s), best call of 2 x {args.seconds} s each")
    print(f"{'M':>6} {'K':>6} {'N':>6}" + "".join(f"{name:>11}" for name in names)
          + "".join(f"{'vs ' + name:>14}" for name in names[1:]))
    rows = []
    for shape in args.shapes:
        m, k, n = shape_of(shape)
        row = {"M": m, "K": k, "N": n, **{name: round(2 * m * k * n / best[name][shape] / 1e9, 1) for name in names}}
        rows.append(row)
        print(f"{m:>6} {k:>6} {n:>6}" + "".join(f"{row[name]:>11.1f}" for name in names)
              + "".join(f"{row['mindkit'] / row[name]:>13.2f}x" for name in names[1:]))
    print(json.dumps({"bench": "gemm", "threads": args.threads, "unit": "GFLOPS", "results": rows}))


if __name__ == "__main__":
    main()
