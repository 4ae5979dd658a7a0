"""Fold LoRA adapters into their base weights: one plain checkpoint that predicts without pet_config.

  python scripts/merge_lora.py --base base.ckpt --adapter output/checkpoint/rank_0/lora_rank_0-3_40.ckpt \
      --config configs/smollm2/finetune_smollm2_lora.yaml --output merged.ckpt
The adapter file may be a training checkpoint (its optimizer state is left out); ``lora_rank``/``lora_alpha`` come from
the config's ``pet_config`` or from --lora_rank/--lora_alpha. The output must not exist yet (nothing is overwritten).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mindkit.errors import CheckpointError, ConfigError  # noqa: E402


def merge(args):
    from mindkit.checkpoint.io import TRAINING_STATE, read_state, save_state
    from mindkit.models.lora import LORA_A, merge_lora
    if os.path.exists(args.output):
        raise CheckpointError("--output", args.output, "a path that does not exist yet")
    rank, alpha = args.lora_rank, args.lora_alpha
    if args.config:
        from mindkit.config.loader import load_yaml
        pet = load_yaml(args.config).get("pet_config") or {}
        rank, alpha = rank or pet.get("lora_rank"), alpha or pet.get("lora_alpha")
    if not rank or not alpha:
        raise ConfigError("--lora_rank/--lora_alpha", (rank, alpha), "both, given or from --config's pet_config")
    from mindkit.utils.paths import resolve_path
    state = read_state(resolve_path(args.base, "--base"), "--base")
    adapters = {k: v for k, v in read_state(args.adapter, "--adapter").items() if not k.startswith(TRAINING_STATE)}
    if not any(k.endswith(LORA_A) for k in adapters):
        raise CheckpointError("--adapter", args.adapter, f"a checkpoint holding *.{LORA_A} adapters")
    for name in adapters:
        base_name = name.rsplit(".", 1)[0] + ".weight"
        if name.endswith(LORA_A) and base_name not in state:
            raise CheckpointError(f"{args.adapter}: parameter {name}", "an adapter without a base weight",
                                  f"{base_name} in {args.base}")
    merged = merge_lora({**state, **adapters}, float(alpha), int(rank))
    save_state(merged, args.output)
    print(f"merged {sum(k.endswith(LORA_A) for k in adapters)} adapters into {args.output}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the base checkpoint (.ckpt, .safetensors or .gguf)")
    p.add_argument("--adapter", required=True, help="a checkpoint holding the LoRA adapters")
    p.add_argument("--output", required=True, help="the merged .ckpt or .safetensors to write")
    p.add_argument("--config", help="a YAML whose pet_config gives lora_rank and lora_alpha")
    p.add_argument("--lora_rank", type=int)
    p.add_argument("--lora_alpha", type=float)
    args = p.parse_args(argv)
    from mindkit.cli import run_tool
    from mindkit.utils.log import setup_console_logging
    setup_console_logging()
    return run_tool(lambda: merge(args))


if __name__ == "__main__":
    sys.exit(main())
