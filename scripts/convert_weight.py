"""Convert weights between formats and layouts, into or out of mindkit/MindFormers names.

  python scripts/convert_weight.py --input hf_llama_folder/ --output llama.ckpt          # HuggingFace -> .ckpt
  python scripts/convert_weight.py --input llama.ckpt --output hf_out/ --model_config my.yaml   # -> HuggingFace
  python scripts/convert_weight.py --input model.gguf --output model.ckpt                 # GGUF (dequantized)
  python scripts/convert_weight.py --torch_ckpt_path model.bin --mindspore_ckpt_path model.ckpt   # pt_to_ms
  python scripts/convert_weight.py --input a.ckpt --output a.safetensors --dtype bfloat16
  python scripts/convert_weight.py --input a.ckpt --output fused.ckpt --qkv_concat true --n_kv_heads 8
  python scripts/convert_weight.py --input model.gguf --output int8.ckpt --quant_weight int8   # model: quant_weight

Inputs: a HuggingFace Llama folder (model.safetensors / pytorch_model.bin or a sharded index), .gguf,
.bin/.pth/.pt (PyTorch state dicts, read without torch), .ckpt, .safetensors. Outputs: .ckpt / .safetensors by
suffix, any other path is a HuggingFace folder (model.safetensors + config.json). Each tensor keeps its stored
precision unless --dtype is given. The input is never written; an existing output needs --force.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mindkit.errors import ConfigError  # noqa: E402


def model_config_of(path):
    from mindkit.config.loader import load_yaml
    from mindkit.config.sections import MindkitConfig
    from mindkit.runners.build import build_model_config
    return build_model_config(MindkitConfig.from_dict(load_yaml(path)))


def parse_bool(value):
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"got {value!r}; expected true or false")
    return value.lower() == "true"


def convert(args):
    from mindkit.checkpoint.convert import convert_weights
    if not args.input or not args.output:
        raise ConfigError("--input/--output", None, "both paths (or --torch_ckpt_path/--mindspore_ckpt_path)")
    if args.model and args.model.lower() != "llama":
        raise ConfigError("--model", args.model, "llama (the converter knows Llama's tensor names)")
    config = model_config_of(args.model_config) if args.model_config else None
    convert_weights(args.input, args.output, to="hf" if args.reversed else args.to, model_config=config,
                    qkv_concat=args.qkv_concat, n_kv_heads=args.n_kv_heads, num_heads=args.num_heads,
                    dtype=args.dtype, quant_weight=args.quant_weight, quant_group_size=args.quant_group_size,
                    force=args.force)


def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", "--input_path", "--torch_ckpt_path", "--pre_ckpt_path", dest="input",
                   help="the weights to convert (file or HuggingFace folder); never written")
    p.add_argument("--output", "--output_path", "--mindspore_ckpt_path", dest="output",
                   help=".ckpt, .safetensors (MindSpore names) or a folder (HuggingFace)")
    p.add_argument("--to", choices=["mindspore", "hf"], default=None, help="output kind (default: by suffix)")
    p.add_argument("--reversed", action="store_true", help="MindFormers' spelling of --to hf")
    p.add_argument("--model", help="MindFormers' model name; only llama")
    p.add_argument("--model_config", help="a YAML: the model's shape (head counts for --qkv_concat, config.json)")
    p.add_argument("--qkv_concat", type=parse_bool, help="true: fuse attention/FFN projections; false: split them")
    p.add_argument("--n_kv_heads", type=int, help="KV heads (for --qkv_concat without --model_config)")
    p.add_argument("--num_heads", type=int, help="attention heads (for a HuggingFace config.json)")
    p.add_argument("--dtype", help="float32, float16 or bfloat16 (fp32/fp16/bf16); default: as stored")
    p.add_argument("--quant_weight", choices=["int8"], help="weight-only int8 projections and head, a float32 "
                   "scale and offset per group of inputs")
    p.add_argument("--quant_group_size", type=int, default=32,
                   help="inputs per int8 group (default 32; the model's quant_group_size must match)")
    p.add_argument("--force", action="store_true", help="replace an existing output (files only, deletes nothing)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    from mindkit.cli import run_tool
    from mindkit.utils.log import setup_console_logging
    setup_console_logging()
    return run_tool(lambda: convert(args))


if __name__ == "__main__":
    sys.exit(main())
