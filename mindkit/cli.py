"""``run_mindformer.py`` flags → config overrides → the runner for ``run_mode``.

Precedence (MindFormers'): YAML < explicit flags < ``--options k=v`` < free-form ``--a.b.c=v`` / ``--a.b.c v``.
Every ``MindkitError`` ends the run with one line on stderr and exit code 1, never a traceback.
"""
import argparse
import logging
import sys

from mindkit.config.loader import apply_options, load_yaml, parse_value, set_path
from mindkit.config.sections import RUN_MODES, MindkitConfig
from mindkit.errors import ConfigError, MindkitError

logger = logging.getLogger("mindkit")


def str2bool(text):
    if isinstance(text, bool):
        return text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def bool_or_str(text):
    return text.lower() == "true" if text.lower() in ("true", "false") else text


# flag → (config path(s), parser). A path tuple sets several keys (e.g. both datasets).
FLAGS = {
    "run_mode": ("run_mode", str), "mode": ("context.mode", int), "device_target": ("context.device_target", str),
    "device_id": ("context.device_id", int), "use_parallel": ("use_parallel", str2bool),
    "load_checkpoint": ("load_checkpoint", str), "src_strategy_path_or_dir": ("src_strategy_path_or_dir", str),
    "auto_trans_ckpt": ("auto_trans_ckpt", str2bool), "transform_process_num": ("transform_process_num", int),
    "only_save_strategy": ("only_save_strategy", str2bool), "resume_training": ("resume_training", bool_or_str),
    "predict_batch_size": ("predict_batch_size", int), "seed": ("seed", int), "output_dir": ("output_dir", str),
    "train_dataset_dir": ("train_dataset.data_loader.dataset_dir", str),
    "eval_dataset_dir": ("eval_dataset.data_loader.dataset_dir", str),
    "epochs": ("runner_config.epochs", int), "batch_size": ("runner_config.batch_size", int),
    "gradient_accumulation_steps": ("runner_config.gradient_accumulation_steps", int),
    "sink_mode": ("runner_config.sink_mode", str2bool), "do_sample": ("model.model_config.do_sample", str2bool),
    "max_new_tokens": ("model.model_config.max_new_tokens", int),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError("command line", None, None, hint=message)


def build_parser():
    p = _Parser(prog="run_mindformer.py", description="mindkit: run a MindFormers-style YAML config.")
    p.add_argument("--config", required=True, help="YAML config path")
    for flag, (path, typ) in FLAGS.items():
        p.add_argument(f"--{flag}", type=typ, default=None, help=f"sets {path}")
    p.add_argument("--predict_data", nargs="+", default=None,
                   help="prompts, or one text file with a prompt per line")
    p.add_argument("--num_samples", type=int, default=None, help="sets {train,eval}_dataset.data_loader.num_samples")
    p.add_argument("--register_path", default=None, help="a .py file or folder with extra registered classes")
    p.add_argument("--options", nargs="+", default=[], help="k.sub=v deep-merge overrides")
    return p


def split_free_form(argv):
    """Separate ``--a.b=c`` / ``--a.b c`` (a dotted key) from regular flags."""
    regular, free = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if "." in name:
            if "=" in arg:
                free.append(arg[2:])
            elif i + 1 < len(argv):
                free.append(f"{name}={argv[i + 1]}")
                i += 1
            else:
                raise ConfigError(name, None, "a value (--key=value or --key value)")
        else:
            regular.append(arg)
        i += 1
    return regular, free


def resolve_config_path(path):
    """The current directory first (MindFormers looks only beside its script; fixed), then beside this repo."""
    from mindkit.utils.paths import resolve_path
    return resolve_path(path, "--config")


def config_from_args(argv):
    """Parse the command line into a validated MindkitConfig (raises ConfigError)."""
    regular, free = split_free_form(list(argv))
    args = build_parser().parse_args(regular)
    tree = load_yaml(resolve_config_path(args.config))
    for flag, (path, _) in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            set_path(tree, path, value, create=True)
    if args.predict_data is not None:
        tree["input_data"] = args.predict_data
    if args.num_samples is not None:
        for ds in [k for k in ("train_dataset", "eval_dataset") if isinstance(tree.get(k), dict)] or ["train_dataset"]:
            set_path(tree, f"{ds}.data_loader.num_samples", args.num_samples, create=True)
    apply_options(tree, args.options, create=True)
    apply_options(tree, free, create=False)
    if args.run_mode is not None and args.run_mode not in RUN_MODES:
        raise ConfigError("run_mode", args.run_mode, "one of " + ", ".join(RUN_MODES))
    return MindkitConfig.from_dict(tree), args


def main(argv=None):
    from mindkit.utils.log import setup_console_logging
    setup_console_logging()

    def run():
        config, args = config_from_args(sys.argv[1:] if argv is None else argv)
        from mindkit import registry
        registry.load_register_path(args.register_path)
        runner_cls = registry.get("runner", config.run_mode, key="run_mode")
        runner_cls(config).run()
    return run_tool(run)


def run_tool(fn):
    """Run ``fn`` (the body of the CLI or a script): a MindkitError is one ``error:`` line and exit code 1; a bug
    of ours is one line too, with the traceback in error.log."""
    from mindkit.utils.log import log_to_files
    try:
        fn()
    except MindkitError as e:
        log_to_files(f"error: {e}")
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug of ours: one line for the user, the traceback in error.log
        where = log_to_files(f"internal error: {type(e).__name__}: {e}", exc_info=True)
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        print(f"error: internal error {type(e).__name__}: {first} (traceback in {where})", file=sys.stderr)
        return 1
    return 0


__all__ = ["main", "run_tool", "config_from_args", "parse_value"]
