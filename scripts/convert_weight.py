"""Convert weights between formats and layouts, into or out of mindkit/MindFormers names.

  python scripts/convert_weight.py --input hf_llama_folder/ --output llama.ckpt          # HuggingFace -> .ckpt
  python scripts/convert_weight.py --input llama.ckpt --output hf_out/ --to hf --model_config my.yaml
  python scripts/convert_weight.py --input model.gguf --output model.ckpt                 # GGUF (dequantized)
  python scripts/convert_weight.py --torch_ckpt_path model.pth --mindspore_ckpt_path model.ckpt   # pt_to_ms
  python scripts/convert_weight.py --input a.ckpt --output a.safetensors --dtype bfloat16
  python scripts/convert_weight.py --input a.ckpt --output fused.ckpt --qkv_concat true --model_config my.yaml
  python scripts/convert_weight.py --input model.gguf --output int8.ckpt --quant_weight int8   # model: quant_weight
Inputs: a HuggingFace Llama folder (config.json + model.safetensors or its sharded index), .gguf, .pth/.bin/.pt
(needs torch), .ckpt, .safetensors. Outputs: .ckpt / .safetensors by suffix, or a HuggingFace folder (--to hf).
The input is never written; an existing output needs --force (files only).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mindkit.errors import CheckpointError, ConfigError  # noqa: E402


def model_config_of(path):
    from mindkit.config.loader import load_yaml
    from mindkit.config.sections import MindkitConfig
    from mindkit.runners.build import build_model_config
    return build_model_config(MindkitConfig.from_dict(load_yaml(path)))


def convert(args):
    import time
    from mindkit.checkpoint.convert import read_any, set_fused, write_any
    if not args.input or not args.output:
        raise ConfigError("--input/--output", (args.input, args.output), "both paths")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise CheckpointError("--output", args.output, "a path other than --input")
    hf = args.to == "hf" or not args.output.endswith((".ckpt", ".safetensors"))
    if os.path.exists(args.output) and (hf or not args.force):
        raise CheckpointError("--output", args.output, "a path that does not exist yet",
                              hint="--force replaces an existing file" if not hf else "HF folders are never replaced")
    config = model_config_of(args.model_config) if args.model_config else None
    if args.qkv_concat is not None and config is None:
        raise ConfigError("--qkv_concat", args.qkv_concat, "--model_config too (the head counts decide the layout)")
    t0 = time.perf_counter()
    state = read_any(args.input)
    if args.qkv_concat is not None:
        state = set_fused(state, args.qkv_concat == "true", config)
    if args.quant_weight == "int8":
        from mindkit.checkpoint.quantize import quantize_state
        state = quantize_state(state)
    write_any(state, args.output, hf=hf, model_config=config, dtype=args.dtype)
    size = sum(v.nbytes for v in state.values())
    print(f"wrote {len(state)} tensors ({size / 2**20:.1f} MiB in memory) to {args.output} "
          f"in {time.perf_counter() - t0:.1f} s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", "--torch_ckpt_path", "--pre_ckpt_path", dest="input")
    p.add_argument("--output", "--mindspore_ckpt_path", dest="output")
    p.add_argument("--to", choices=["mindspore", "hf"], default=None, help="output kind (default: by suffix)")
    p.add_argument("--model_config", help="a YAML: the model's shape (for --qkv_concat and a HF config.json)")
    p.add_argument("--qkv_concat", choices=["true", "false"], help="fuse or split attention/FFN projections")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--quant_weight", choices=["int8"], help="weight-only int8 projections with per-row scales")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    args = p.parse_args(argv)
    from mindkit.cli import run_tool
    from mindkit.utils.log import setup_console_logging
    setup_console_logging()
    return run_tool(lambda: convert(args))


if __name__ == "__main__":
    sys.exit(main())
