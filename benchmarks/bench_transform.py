"""Checkpoint transform cost as the model grows: wall time and peak memory of scripts/transform_checkpoint.py
(each transform a fresh process, its peak RSS from the kernel) for random Llamas of ~0.33 GB and ~1.3 GB float32:
one file -> 2-way tensor parallel -> 2 pipeline stages -> one file, with 1 and 2 processes for the first step.
Prints a table, then one JSON line.

    python benchmarks/bench_transform.py [--sizes small large] [--workdir /tmp/bench_transform]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SCRIPT = os.path.join(REPO, "scripts", "transform_checkpoint.py")
SIZES = {  # hidden, layers, ffn, vocab
    "small": dict(hidden_size=768, num_layers=8, intermediate_size=2048, vocab_size=32000, num_heads=12, n_kv_heads=4),
    "large": dict(hidden_size=1536, num_layers=8, intermediate_size=4096, vocab_size=32000, num_heads=12,
                  n_kv_heads=4),
}


def write_model(folder, shape):
    """A YAML for the shape and a random float32 checkpoint of it; returns (yaml, ckpt, bytes)."""
    import yaml
    from mindkit.checkpoint import save_state
    from mindkit.config.sections import MindkitConfig
    from mindkit.parallel.layout import full_shapes
    from mindkit.runners.build import build_model
    tree = {"model": {"model_config": dict(shape, type="LlamaConfig", seq_length=256), "arch": {"type":
                                                                                               "LlamaForCausalLM"}}}
    config_path = os.path.join(folder, "model.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(tree, f)
    shapes = full_shapes(build_model(MindkitConfig.from_dict(tree), load=False))
    rng = np.random.default_rng(0)
    state = {n: rng.standard_normal(s, dtype=np.float32) * 0.02 for n, s in shapes.items()}
    ckpt = os.path.join(folder, "model.ckpt")
    save_state(state, ckpt)
    return config_path, ckpt, sum(v.nbytes for v in state.values())


def timed(args):
    """Run the script; (seconds, peak RSS of that process and its workers in MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, SCRIPT, *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read()
    if status != 0:
        raise SystemExit(f"transform failed: {' '.join(map(str, args))}\n{err[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", nargs="+", default=["small", "large"], choices=list(SIZES))
    p.add_argument("--workdir", default="/tmp/bench_transform")
    args = p.parse_args()
    rows = []
    for size in args.sizes:
        folder = os.path.join(args.workdir, size)
        shutil.rmtree(folder, ignore_errors=True)  # our own scratch folder
        os.makedirs(folder)
        config, ckpt, nbytes = write_model(folder, SIZES[size])
        steps = [("file -> tp2", ckpt, "tp=1", "tp=2", "tp2", 1), ("file -> tp2", ckpt, "tp=1", "tp=2", "tp2_p2", 2),
                 ("tp2 -> pp2", "tp2", "tp=2", "pp=2", "pp2", 1), ("pp2 -> file", "pp2", "pp=2", "tp=1", "back", 1)]
        for name, src, src_layout, dst_layout, dst, procs in steps:
            seconds, rss = timed(["--model_config", config, "--src_checkpoint", os.path.join(folder, src),
                                  "--src_layout", src_layout, "--dst_layout", dst_layout, "--dst_checkpoint_dir",
                                  os.path.join(folder, dst), "--transform_process_num", procs])
            rows.append({"size": size, "model_gb": round(nbytes / 1e9, 3), "step": name, "processes": procs,
                         "seconds": round(seconds, 2), "gb_per_s": round(nbytes / 1e9 / seconds, 3),
                         "peak_rss_mib": round(rss)})
        shutil.rmtree(folder)
    print(f"{'model':>6} {'GB':>6} {'step':<13} {'procs':>5} {'seconds':>8} {'GB/s':>6} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['size']:>6} {r['model_gb']:>6} {r['step']:<13} {r['processes']:>5} {r['seconds']:>8} "
              f"{r['gb_per_s']:>6} {r['peak_rss_mib']:>13}")
    print(json.dumps({"benchmark": "checkpoint_transform", "rows": rows}))


if __name__ == "__main__":
    main()
