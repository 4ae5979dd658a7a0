"""Load generator for the server: N streamed requests at a given concurrency, reported as vLLM's
benchmark_serving.py does (request throughput, output tokens/s, TTFT / TPOT / ITL mean, median, P99).

    python scripts/serve_load.py --port 8000 --num_prompts 16 --concurrency 16 --max_tokens 32
"""
import argparse
import json
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mindkit.serve import client  # noqa: E402

DEFAULT_PROMPTS = ["What is the capital of France?", "Name three colors.", "Write a haiku about the sea.",
                   "What is 12 times 7?", "Tell me a fun fact about cats.", "Explain rain to a child.",
                   "Suggest a name for a dog.", "What is the tallest mountain?"]


def one_request(base, prompt, max_tokens, api_key=None, chat=False):
    """Streams one request; returns its timings and token counts (or the error)."""
    body = {"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    body.update({"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt})
    path = "/v1/chat/completions" if chat else "/v1/completions"
    start = time.perf_counter()
    try:
        events, times, done = client.stream(base, path, body, api_key)
    except (client.HTTPError, OSError) as e:
        return {"ok": False, "error": str(e)}
    token_times = [t for e, t in zip(events, times) if e["choices"] and
                   ((e["choices"][0].get("delta") or {}).get("content") or e["choices"][0].get("text"))]
    usage = next((e["usage"] for e in reversed(events) if e.get("usage")), {})
    end = times[-1] if times else time.perf_counter()
    out = usage.get("completion_tokens", len(token_times))
    ttft = (token_times[0] if token_times else end) - start
    return {"ok": done, "ttft": ttft, "latency": end - start, "input": usage.get("prompt_tokens", 0), "output": out,
            "tpot": (end - start - ttft) / (out - 1) if out > 1 else 0.0, "itl": list(np.diff(token_times))}


def run_load(base, prompts, max_tokens, concurrency, api_key=None, chat=False):
    """All ``prompts`` with at most ``concurrency`` in flight; returns (per-request results, duration)."""
    results, lock, queue = [], threading.Lock(), list(enumerate(prompts))

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                _, prompt = queue.pop(0)
            r = one_request(base, prompt, max_tokens, api_key, chat)
            with lock:
                results.append(r)
    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(min(concurrency, len(prompts)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def summarize(results, duration):
    ok = [r for r in results if r.get("ok")]
    ms = lambda xs, f: float(f(xs)) * 1000 if len(xs) else 0.0  # noqa: E731
    ttft, tpot = [r["ttft"] for r in ok], [r["tpot"] for r in ok]
    itl = [x for r in ok for x in r["itl"]]
    out_tokens, in_tokens = sum(r["output"] for r in ok), sum(r["input"] for r in ok)
    s = {"completed": len(ok), "failed": len(results) - len(ok), "duration": duration,
         "total_input_tokens": in_tokens, "total_output_tokens": out_tokens,
         "request_throughput": len(ok) / duration, "output_throughput": out_tokens / duration,
         "total_token_throughput": (in_tokens + out_tokens) / duration}
    for name, xs in (("ttft", ttft), ("tpot", tpot), ("itl", itl)):
        s.update({f"mean_{name}_ms": ms(xs, np.mean), f"median_{name}_ms": ms(xs, np.median),
                  f"p99_{name}_ms": ms(xs, lambda v: np.percentile(v, 99))})
    return s


def report(s, title="Serving Benchmark Result"):
    lines = [f"{' ' + title + ' ':=^50}",
             f"{'Successful requests:':<40}{s['completed']:<10}", f"{'Failed requests:':<40}{s['failed']:<10}",
             f"{'Benchmark duration (s):':<40}{s['duration']:<10.2f}",
             f"{'Total input tokens:':<40}{s['total_input_tokens']:<10}",
             f"{'Total generated tokens:':<40}{s['total_output_tokens']:<10}",
             f"{'Request throughput (req/s):':<40}{s['request_throughput']:<10.2f}",
             f"{'Output token throughput (tok/s):':<40}{s['output_throughput']:<10.2f}",
             f"{'Total Token throughput (tok/s):':<40}{s['total_token_throughput']:<10.2f}"]
    for name, head in (("ttft", "Time to First Token"), ("tpot", "Time per Output Token (excl. 1st token)"),
                       ("itl", "Inter-token Latency")):
        lines.append(f"{head:-^50}")
        for stat in ("mean", "median", "p99"):
            label = f"{stat.capitalize() if stat != 'p99' else 'P99'} {name.upper()} (ms):"
            lines.append(f"{label:<40}{s[f'{stat}_{name}_ms']:<10.2f}")
    lines.append("=" * 50)
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--num_prompts", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (1: sequential)")
    p.add_argument("--max_tokens", type=int, default=32)
    p.add_argument("--chat", action="store_true", help="use /v1/chat/completions")
    p.add_argument("--api_key", default=os.environ.get("MINDKIT_API_KEY"))
    p.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    args = p.parse_args(argv)
    prompts = [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(args.num_prompts)]
    results, duration = run_load(f"http://{args.host}:{args.port}", prompts, args.max_tokens, args.concurrency,
                                 args.api_key, args.chat)
    s = summarize(results, duration)
    print(report(s))
    if args.json:
        print(json.dumps(s))
    return 0 if not s["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
