"""Reshard a distributed checkpoint offline, with strategy files or with layouts derived from a model config.

  # strategies saved by runs (files, or folders of per-rank/per-stage files that are merged first)
  python scripts/transform_checkpoint.py --src_checkpoint ckpt/ --src_strategy strategy/ \
      --dst_checkpoint_dir out/ --dst_strategy dst_strategy.ckpt
  # no strategy files at all: both layouts derived from the model definition (Yuan 32 stages -> 8-way tensor parallel)
  python scripts/transform_checkpoint.py --model_config configs/x.yaml --src_checkpoint ckpt/ \
      --src_layout tp=1,pp=32 --dst_layout tp=8 --dst_checkpoint_dir out/
Layouts: dp=, tp= (or mp=), pp= a number of stages or the layer count per stage, pp=[1,3]. A missing strategy or
layout means unsplit. The source is never modified; a non-empty destination needs --force.
"""
import argparse
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mindkit.errors import ConfigError  # noqa: E402

_LAYOUT_KEYS = {"dp": "data_parallel", "tp": "model_parallel", "mp": "model_parallel", "pp": "pipeline_stage"}


def parse_layout(text, key):
    """``tp=8,pp=[1,3]`` → ParallelConfig."""
    from mindkit.config.loader import parse_value
    from mindkit.config.sections import ParallelConfig
    pairs = re.findall(r"(\w+)=(\[[^\]]*\]|[^,]+)", text or "")
    if not pairs or ",".join(f"{k}={v}" for k, v in pairs) != text.replace(" ", ""):
        raise ConfigError(key, text, "comma-separated dp=N, tp=N and pp=N or pp=[n1,n2,...], e.g. tp=8,pp=1")
    unknown = [k for k, _ in pairs if k not in _LAYOUT_KEYS]
    if unknown:
        raise ConfigError(key, unknown[0], "one of " + ", ".join(_LAYOUT_KEYS))
    return ParallelConfig.from_dict({_LAYOUT_KEYS[k]: parse_value(v) for k, v in pairs}, key=key)


def derived_strategies(args, folder):
    """Both strategies (and the model's full shapes) from ``--model_config`` and the two layouts."""
    from mindkit.checkpoint.headers import checkpoint_header
    from mindkit.checkpoint.transform import source_ranks
    from mindkit.config.loader import load_yaml
    from mindkit.config.sections import MindkitConfig
    from mindkit.parallel.layout import full_shapes
    from mindkit.parallel.strategy import derive_strategy
    from mindkit.runners.build import build_model
    config = MindkitConfig.from_dict(load_yaml(args.model_config))
    src, dst = parse_layout(args.src_layout, "--src_layout"), parse_layout(args.dst_layout, "--dst_layout")
    files = source_ranks(args.src_checkpoint)
    per_stage = src.data_parallel * src.model_parallel
    names = set().union(*(checkpoint_header(files[r]) for r in range(0, len(files), per_stage)))
    src_strategy, dst_strategy = (
        None if layout.data_parallel * layout.model_parallel * layout.stages == 1  # one device: unsplit
        else derive_strategy(config, layout, os.path.join(folder, role), names=names)
        for role, layout in (("src", src), ("dst", dst)))
    return src_strategy, dst_strategy, full_shapes(build_model(config, load=False))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src_checkpoint", required=True, help="a checkpoint file, or a folder of rank_N/ folders")
    p.add_argument("--src_strategy", help="the source's strategy file or folder (none: unsplit)")
    p.add_argument("--dst_checkpoint_dir", required=True, help="a new or empty folder for rank_N/ results")
    p.add_argument("--dst_strategy", help="the destination's strategy file or folder (none: unsplit)")
    p.add_argument("--prefix", default="checkpoint_", help="result files: rank_N/{prefix}N.ckpt")
    p.add_argument("--transform_process_num", type=int, default=1, help="processes sharing the destination ranks")
    p.add_argument("--model_config", help="a mindkit/MindFormers YAML: derive strategies from its model")
    p.add_argument("--src_layout", default="tp=1", help="with --model_config: the source layout, e.g. tp=1,pp=32")
    p.add_argument("--dst_layout", default="tp=1", help="with --model_config: the destination layout, e.g. tp=8")
    p.add_argument("--force", action="store_true", help="write into a non-empty destination folder")
    args = p.parse_args(argv)
    from mindkit.cli import run_tool
    from mindkit.utils.log import setup_console_logging
    setup_console_logging()
    return run_tool(lambda: transform_main(args))


def transform_main(args):
    from mindkit.checkpoint.transform import transform
    if args.transform_process_num < 1:
        raise ConfigError("--transform_process_num", args.transform_process_num, "a number >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        full_shapes = None
        src_strategy, dst_strategy = args.src_strategy, args.dst_strategy
        if args.model_config:
            if src_strategy or dst_strategy:
                raise ConfigError("--model_config", args.model_config,
                                  "either strategies (--src_strategy/--dst_strategy) or --model_config with layouts")
            src_strategy, dst_strategy, full_shapes = derived_strategies(args, tmp)
        plan = transform(args.src_checkpoint, args.dst_checkpoint_dir, src_strategy, dst_strategy, args.prefix,
                         args.transform_process_num, args.force, full_shapes)
    print(f"wrote {plan.dst_ranks} rank(s) to {os.path.abspath(args.dst_checkpoint_dir)}")


if __name__ == "__main__":  # the guard matters: --transform_process_num workers re-import this file
    sys.exit(main())
