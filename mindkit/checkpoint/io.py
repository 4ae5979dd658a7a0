"""Read and write weights (MindSpore .ckpt, .safetensors, GGUF) and place them into a model, strictly:
a missing, unexpected or mis-shaped parameter is an error that names it — never silent random weights."""
import logging
import os

import numpy as np
import mindspore as ms

from mindkit.checkpoint.quantize import SCALE, is_quantized, quantization_params, quantize_state
from mindkit.errors import CheckpointError
from mindkit.parallel.layout import full_shapes, param_layouts, shard

logger = logging.getLogger("mindkit")
WEIGHT_SUFFIXES = (".ckpt", ".safetensors", ".gguf")


def resolve_checkpoint_file(path, key="load_checkpoint"):
    """A file, or a folder holding weight files (the last one in name order wins, as in MindSpore)."""
    if not path or not os.path.exists(path):
        raise CheckpointError(key, path, "an existing .ckpt, .safetensors or .gguf file, or a folder of them")
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(WEIGHT_SUFFIXES))
        if not files:
            raise CheckpointError(key, path, "a folder containing .ckpt, .safetensors or .gguf files")
        kinds = sorted({os.path.splitext(f)[1] for f in files})
        if len(kinds) > 1:
            raise CheckpointError(key, path, "weight files of one format in a folder",
                                  hint=f"found {' and '.join(kinds)} files: which one is meant is ambiguous")
        path = os.path.join(path, files[-1])
    if not path.endswith(WEIGHT_SUFFIXES):
        raise CheckpointError(key, path, "a file ending in " + ", ".join(WEIGHT_SUFFIXES))
    return path


def _to_numpy(value):
    t = value if isinstance(value, ms.Tensor) else ms.Tensor(value)
    if t.dtype == ms.bfloat16:
        t = t.astype(ms.float32)
    return t.asnumpy()


def read_state(path, key="load_checkpoint"):
    """name → numpy array (bfloat16 is widened to float32, exactly)."""
    path = resolve_checkpoint_file(path, key)
    if path.endswith(".gguf"):
        from mindkit.checkpoint.gguf_weights import read_gguf_state
        return read_gguf_state(path, key)
    try:
        fmt = "safetensors" if path.endswith(".safetensors") else "ckpt"
        params = ms.load_checkpoint(path, format=fmt)
    except (ValueError, RuntimeError, OSError) as e:
        raise CheckpointError(key, path, "a readable checkpoint file", hint=str(e).splitlines()[0][:200]) from None
    return {name: _to_numpy(p) for name, p in params.items()}


def save_state(state, path, dtype=None):
    """Write name → array as .ckpt or .safetensors (by suffix); ``dtype`` casts the float tensors (e.g. ms.bfloat16)."""
    items = []
    for name, arr in state.items():
        t = ms.Tensor(arr)
        items.append({"name": name, "data": t.astype(dtype) if dtype is not None and np.asarray(arr).dtype.kind == "f"
                      else t})
    fmt = "safetensors" if path.endswith(".safetensors") else "ckpt"
    ms.save_checkpoint(items, path, format=fmt)


# Hyperparameters that do not show in any weight's shape, checked against a GGUF's metadata.
GGUF_CHECKED = ("num_heads", "n_kv_heads", "theta", "rms_norm_eps")


def check_against_gguf(config, path, key):
    from mindkit.checkpoint.gguf_weights import gguf_model_config
    recorded = gguf_model_config(path, key)
    for name in GGUF_CHECKED:
        ours = config.kv_heads if name == "n_kv_heads" else getattr(config, name)
        theirs = recorded[name]
        if theirs is not None and not np.isclose(float(ours), float(theirs), rtol=1e-6):
            raise CheckpointError(f"model.model_config.{name}", ours, f"{theirs} as recorded in {path}")


def rank_folder(path, rank, key="load_checkpoint"):
    """``path/rank_{rank}`` when ``path`` is a distributed checkpoint (a folder of rank_N folders), else None."""
    if not path or not os.path.isdir(path):
        return None
    ranks = sorted(d for d in os.listdir(path) if d.startswith("rank_") and os.path.isdir(os.path.join(path, d)))
    if not ranks:
        return None
    if f"rank_{rank}" not in ranks:
        raise CheckpointError(key, path, f"a rank_{rank} folder for this process (found {', '.join(ranks)})")
    return os.path.join(path, f"rank_{rank}")


# What a training checkpoint holds besides weights (optimizer moments and counters); loading for inference skips it.
TRAINING_STATE = ("adam_m.", "adam_v.", "global_step", "learning_rate", "epoch_num", "step_num", "loss_scale",
                  "scale_sense", "current_iterator_step", "last_overflow_iterator_step")


def _int8_hint(name, state, expected):
    """Why an int8 weight's scale or offset does not fit the model: another group size, or the old format."""
    weight = quantization_params(name, expected)
    if weight is None or weight not in state or weight + SCALE not in state:
        return None
    scale = state[weight + SCALE]
    if scale.ndim != 2:
        return "an int8 checkpoint with one scale per row, which mindkit no longer reads: quantize the float weights"
    return (f"its int8 groups are {state[weight].shape[1] // scale.shape[1]} inputs wide: set "
            "model.model_config.quant_group_size to match")


def load_weights(model, path, key="load_checkpoint", rank=0, names=None):
    """Load ``path`` into ``model``; returns the resolved file. A full checkpoint is sliced to this rank's shard;
    a distributed one (``path/rank_{rank}/``) must already hold this rank's slices. ``names`` limits which
    parameters this file must provide (e.g. a LoRA adapter file over a base checkpoint). Raises CheckpointError
    naming any mismatch."""
    own = rank_folder(path, rank, key)
    path = resolve_checkpoint_file(own or path, key)
    if path.endswith(".gguf"):
        check_against_gguf(model.config, path, key)
    state = {k: v for k, v in read_state(path, key).items() if not k.startswith(TRAINING_STATE)}
    # own: this rank's slices (local shapes); else full weights
    expected = {p.name: tuple(p.shape) for p in model.get_parameters()} if own else full_shapes(model)
    state = model.adapt_checkpoint(state, expected, local=bool(own))
    head, tied_to = model.tied_head or (None, None)
    if head in state and tied_to in state:
        # a tied model's head is its embedding; a checkpoint may still carry the (identical) copy
        if not np.array_equal(state[head], state[tied_to]):
            raise CheckpointError(f"{path}: parameter {head}", "a head different from the embedding",
                                  f"no separate {head} in a model with tie_word_embeddings: True",
                                  hint="set model.model_config.tie_word_embeddings: False")
        del state[head]
    int8 = {p.name for p in model.get_parameters() if p.dtype == ms.int8}
    to_quantize = {n for n in int8 if n in state and state[n].dtype.kind == "f"}
    if to_quantize:
        logger.info("quantizing %d float weights of %s to int8 as they load (quant_weight: int8)", len(to_quantize),
                    path)
        state = quantize_state(state, to_quantize, model.config.quant_group_size)
    wanted = set(expected) if names is None else set(names) & set(expected)
    missing = sorted(wanted - set(state))
    foreign = getattr(model, "foreign_param", lambda name: False)  # held by another pipeline stage
    extra = sorted(n for n in set(state) - set(expected) if not foreign(n))
    if missing:
        raise CheckpointError(f"{path}: parameter {missing[0]}", "missing", f"shape {expected[missing[0]]}",
                              hint=_int8_hint(missing[0], state, expected)
                              or (f"{len(missing)} missing in all" if len(missing) > 1 else None))
    if extra:
        shape = None if state[extra[0]] is None else tuple(state[extra[0]].shape)
        raise CheckpointError(f"{path}: parameter {extra[0]}", f"shape {shape}", "no such parameter in the model",
                              hint="an int8 checkpoint needs model.model_config.quant_weight: int8"
                              if is_quantized(state) and not int8 else
                              f"{len(extra)} unexpected in all" if len(extra) > 1 else None)
    for name in wanted:
        if tuple(state[name].shape) != expected[name]:
            raise CheckpointError(f"{path}: parameter {name}", f"shape {tuple(state[name].shape)}",
                                  f"shape {expected[name]}", hint=_int8_hint(name, state, expected))
        if (state[name].dtype == np.int8) != (name in int8):
            raise CheckpointError(f"{path}: parameter {name}", f"dtype {state[name].dtype}",
                                  "int8" if name in int8 else "a float dtype")
    layouts = param_layouts(model)
    for p in model.get_parameters():
        if p.name in wanted:
            value = state[p.name] if own else shard(state[p.name], *layouts[p.name])
            p.set_data(ms.Tensor(np.ascontiguousarray(value), dtype=p.dtype))
    logger.info("loaded %d parameters from %s", len(wanted), path)
    return path
