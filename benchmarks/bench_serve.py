"""Serving throughput: 16 concurrent requests against the same 16 one at a time, on a real server process.

Starts ``run_mindformer.py --run_mode serve`` (SmolLM2-135M by default) on a free loopback port, warms it up, then
runs the load generator (scripts/serve_load.py) twice: all requests in flight at once (continuous batching) and
sequentially. Prints vLLM-style reports, a comparison table, then one JSON line with the throughput ratio and the
decode steps each run took (from /metrics).

    python benchmarks/bench_serve.py                       # SmolLM2, 16 requests x 32 tokens, 8 batch rows
    python benchmarks/bench_serve.py --num_prompts 16 --max_tokens 16 --max_num_seqs 16
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))
from mindkit.serve import client  # noqa: E402
from serve_load import DEFAULT_PROMPTS, report, run_load, summarize  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(base, prompts, max_tokens, concurrency, chat):
    steps = client.metrics(base)["mindkit:decode_steps_total"]
    results, duration = run_load(base, prompts, max_tokens, concurrency, chat=chat)
    s = summarize(results, duration)
    s["decode_steps"] = int(client.metrics(base)["mindkit:decode_steps_total"] - steps)
    return s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=os.path.join(REPO, "configs", "smollm2", "serve_smollm2_135m.yaml"))
    p.add_argument("--num_prompts", type=int, default=16)
    p.add_argument("--max_tokens", type=int, default=32)
    p.add_argument("--max_num_seqs", type=int, default=8)
    p.add_argument("--completions", action="store_true", help="raw prompts on /v1/completions instead of chat")
    p.add_argument("extra", nargs="*", help="more run_mindformer.py overrides, e.g. --load_checkpoint=x.ckpt")
    args = p.parse_args(argv)
    port, chat = free_port(), not args.completions
    base = f"http://127.0.0.1:{port}"
    workdir = tempfile.mkdtemp(prefix="bench_serve_")
    log = open(os.path.join(workdir, "server.log"), "w")
    server = subprocess.Popen([sys.executable, os.path.join(REPO, "run_mindformer.py"), "--config", args.config,
                               "--output_dir", os.path.join(workdir, "output"), f"--serve.port={port}",
                               f"--serve.max_num_seqs={args.max_num_seqs}", *args.extra],
                              cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.perf_counter()
        client.wait_ready(base, 600, server)
        print(f"server ready in {time.perf_counter() - t0:.1f} s (log: {log.name})", flush=True)
        prompts = [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(args.num_prompts)]
        run_load(base, prompts[:2], 4, 2, chat=chat)  # warm-up
        runs = {}
        for name, concurrency in (("concurrent", args.num_prompts), ("sequential", 1)):
            runs[name] = measure(base, prompts, args.max_tokens, concurrency, chat)
            print(report(runs[name], f"{name}: {args.num_prompts} requests"), flush=True)
    finally:
        server.terminate()
        server.wait(120)
    c, s = runs["concurrent"], runs["sequential"]
    print("\n| run | requests | in flight | duration s | req/s | output tok/s | median TTFT ms | median TPOT ms "
          "| decode steps |\n|---|---|---|---|---|---|---|---|---|")
    for name, r, flight in (("concurrent", c, args.num_prompts), ("sequential", s, 1)):
        print(f"| {name} | {r['completed']}/{args.num_prompts} | {flight} | {r['duration']:.1f} | "
              f"{r['request_throughput']:.2f} | {r['output_throughput']:.1f} | {r['median_ttft_ms']:.0f} | "
              f"{r['median_tpot_ms']:.0f} | {r['decode_steps']} |")
    ratio = c["output_throughput"] / s["output_throughput"] if s["output_throughput"] else 0.0
    print(json.dumps({"benchmark": "serve", "config": os.path.relpath(args.config, REPO),
                      "num_prompts": args.num_prompts, "max_tokens": args.max_tokens,
                      "max_num_seqs": args.max_num_seqs, "throughput_ratio": round(ratio, 3),
                      "concurrent": c, "sequential": s}))
    return 0 if not (c["failed"] or s["failed"]) else 1


if __name__ == "__main__":
    sys.exit(main())
