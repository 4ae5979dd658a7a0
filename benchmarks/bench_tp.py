"""Tensor-parallel decode speed here: model_parallel=2 under msrun (one thread per process) against one process with
two threads, on a SmolLM2-sized Llama with random weights (SmolLM2's 3 KV heads do not split by 2: 8 heads, 2 KV
heads, hidden 576, 30 layers, FFN 1536, vocab 49152). Also the latency of one AllReduce of a (batch, 576) float32
activation between the two processes. Prints a table, then one JSON line.

    python benchmarks/bench_tp.py [--batch 1 8] [--new-tokens 32] [--mode 0]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHAPE = dict(hidden_size=576, num_layers=30, num_heads=8, n_kv_heads=2, intermediate_size=1536, vocab_size=49152,
             seq_length=1024, tie_word_embeddings=True, compute_dtype="float32", param_init_type="float32")


def run(args, tp_size, threads):
    """Decode ms/token per batch size in this process (a TP rank when tp_size > 1)."""
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(runtime_num_threads=threads)
    from mindkit.ops.aot import set_threads
    set_threads(threads)
    if args.mode == 1:
        ms.runtime.launch_blocking()
    from mindspore import Tensor, communication, ops
    from mindkit.generation import generate
    from mindkit.generation.model_runner import ModelRunner
    from mindkit.models import LlamaConfig, LlamaForCausalLM
    from mindkit.parallel.tensor_parallel import TPGroup
    rank = 0
    if tp_size > 1:
        communication.init()
        rank = communication.get_rank()
    cfg = LlamaConfig.from_dict(dict(SHAPE, eos_token_id=None))
    ms.set_seed(0)
    model = LlamaForCausalLM(cfg, tp=TPGroup(tp_size, rank))
    runner = ModelRunner(model, compiled=args.mode == 0)
    out = {"tp": tp_size, "threads": threads, "rows": []}
    for b in args.batch:
        prompts = np.random.default_rng(0).integers(3, cfg.vocab_size, (b, 32)).tolist()
        kw = dict(max_new_tokens=args.new_tokens, eos_token_id=(), runner=runner)
        generate(model, prompts, **kw)
        res = generate(model, prompts, **kw)
        out["rows"].append({"batch": b, "decode_ms": (res.total_time - res.time_to_first_token)
                            / max(res.decode_steps - 1, 1) * 1e3, "ttft_ms": res.time_to_first_token * 1e3})
    if tp_size > 1:
        reduce, x = ops.AllReduce(), Tensor(np.ones((1, cfg.hidden_size), np.float32))
        for _ in range(20):
            reduce(x).asnumpy()
        t0 = time.perf_counter()
        for _ in range(200):
            reduce(x).asnumpy()
        out["allreduce_ms"] = (time.perf_counter() - t0) / 200 * 1e3
        out["allreduces_per_step"] = 2 * cfg.num_layers + 1  # attention + FFN outputs per layer, embedding lookup
    return out, rank


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--mode", type=int, default=0, choices=[0, 1])
    p.add_argument("--_worker", choices=["single", "tp"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._worker:
        out, rank = run(args, 2 if args._worker == "tp" else 1, 1 if args._worker == "tp" else 2)
        if rank == 0:
            print("RESULT " + json.dumps(out), flush=True)
        return
    common = ["--batch", *map(str, args.batch), "--new-tokens", str(args.new_tokens), "--mode", str(args.mode)]
    single = subprocess.run([sys.executable, __file__, "--_worker", "single", *common], capture_output=True,
                            text=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_dir = os.path.join(REPO, "output", "bench_tp_msrun")
    cmd = " ".join([__file__, "--_worker", "tp", *common])
    tp = subprocess.run(["bash", os.path.join(REPO, "scripts", "msrun_launcher.sh"), cmd, "2", str(port), log_dir,
                         "True", "600"], capture_output=True, text=True)
    worker0 = open(os.path.join(log_dir, "worker_0.log"), errors="replace").read() if tp.returncode == 0 else ""
    results = []
    for text, proc in ((single.stdout, single), (worker0, tp)):
        line = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            sys.exit(f"benchmark run failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[-1][len("RESULT "):]))
    one, two = results
    print("batch  1 proc x 2 threads ms/token  2 procs (TP=2) x 1 thread ms/token  speedup")
    for a, b in zip(one["rows"], two["rows"]):
        b["speedup_vs_single"] = a["decode_ms"] / b["decode_ms"]
        print(f"{a['batch']:5}  {a['decode_ms']:30.2f}  {b['decode_ms']:34.2f}  {b['speedup_vs_single']:6.2f}x")
    print(f"AllReduce (1 x 576 float32) between the two processes: {two['allreduce_ms']:.3f} ms; "
          f"{two['allreduces_per_step']} per decode step")
    print(json.dumps({"benchmark": "tensor_parallel_decode", "mode": args.mode, "single": one, "tp2": two}))


if __name__ == "__main__":
    main()
