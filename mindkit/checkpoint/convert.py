"""Weight import and export: HuggingFace Llama safetensors folders, GGUF, PyTorch state dicts, MindSpore .ckpt and
.safetensors, fused or separate projections, and precision — all through one name → array state.

Reading: ``read_any(path)`` (a HF folder with ``model.safetensors`` or its sharded index, a .gguf, a .pth/.bin
PyTorch state dict (needs torch), or a MindSpore .ckpt/.safetensors), renamed to MindFormers names. Writing:
``write_any(state, path, fmt)`` as MindSpore .ckpt/.safetensors or a HF folder. The source is never written.
"""
import json
import logging
import os

import numpy as np

from mindkit.checkpoint.fused import match_layout
from mindkit.checkpoint.hf_names import hf_to_mindformers, mindformers_to_hf
from mindkit.checkpoint.io import read_state, save_state
from mindkit.errors import CheckpointError

logger = logging.getLogger("mindkit")
DTYPES = ("float32", "float16", "bfloat16")


def _hf_files(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            return sorted({os.path.join(folder, v) for v in json.load(f)["weight_map"].values()})
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        raise CheckpointError("--input", folder, "a HuggingFace folder with model.safetensors (or its index)")
    return files


def _renamed(state, source):
    renamed, skipped = hf_to_mindformers(state)
    unknown = [n for n in skipped if not n.endswith("rotary_emb.inv_freq")]
    if unknown:
        raise CheckpointError(f"{source}: tensor {unknown[0]}", "no MindFormers counterpart",
                              "HuggingFace Llama tensor names", hint=f"{len(unknown)} unknown in all")
    return renamed


def read_torch(path):
    try:
        import torch
    except ImportError:
        raise CheckpointError("--input", path, "torch installed to read a PyTorch state dict",
                              hint="pip install -r requirements-bench.txt") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise CheckpointError("--input", path, "a PyTorch state dict (name -> tensor)")
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}


def is_hf_folder(path):
    return os.path.isdir(path) and (os.path.isfile(os.path.join(path, "config.json")) or
                                    os.path.isfile(os.path.join(path, "model.safetensors.index.json")))


def read_any(path):
    """name → array with MindFormers names, from any supported input."""
    if not os.path.exists(path):
        raise CheckpointError("--input", path, "an existing checkpoint file or HuggingFace folder")
    if is_hf_folder(path):
        state = {}
        for f in _hf_files(path):
            state.update(read_state(f, "--input"))
        return _renamed(state, path)
    if path.endswith((".pth", ".bin", ".pt")):
        return _renamed(read_torch(path), path)
    state = {k: v for k, v in read_state(path, "--input").items() if v is not None}
    if any(k.startswith("model.embed_tokens") for k in state):  # a single HF-named safetensors file
        return _renamed(state, path)
    return state


def hf_config(model_config):
    """config.json of a HF LlamaForCausalLM from a mindkit LlamaConfig."""
    c = model_config
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.hidden_size,
            "intermediate_size": c.ffn_hidden_size, "num_hidden_layers": c.num_layers,
            "num_attention_heads": c.num_heads, "num_key_value_heads": c.kv_heads, "vocab_size": c.vocab_size,
            "rms_norm_eps": c.rms_norm_eps, "rope_theta": c.theta, "tie_word_embeddings": c.tie_word_embeddings,
            "max_position_embeddings": c.seq_length, "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id,
            "hidden_act": "silu", "torch_dtype": "float32"}


def write_any(state, path, hf=False, model_config=None, dtype="float32"):
    """A MindSpore .ckpt/.safetensors file (by suffix), or a HuggingFace folder (``model.safetensors`` with HF names,
    and ``config.json`` when the model config is known); float tensors stored as ``dtype``."""
    if dtype not in DTYPES:
        raise CheckpointError("--dtype", dtype, "one of " + ", ".join(DTYPES))
    if not hf:
        import mindspore as ms
        save_state(state, path, dtype={"float32": None, "float16": ms.float16, "bfloat16": ms.bfloat16}[dtype])
        return
    if dtype == "bfloat16":
        raise CheckpointError("--dtype", dtype, "float32 or float16 for a HuggingFace folder (numpy has no bfloat16)")
    state = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in state.items()}
    os.makedirs(path)
    renamed, skipped = mindformers_to_hf(state)
    if skipped:
        raise CheckpointError(f"tensor {skipped[0]}", "no HuggingFace counterpart", "MindFormers Llama names",
                              hint="split fused projections first: --qkv_concat false")
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in renamed.items()}, os.path.join(path, "model.safetensors"),
              metadata={"format": "pt"})
    if model_config is not None:
        with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
            json.dump(hf_config(model_config), f, indent=1)


def set_fused(state, fused, model_config):
    """Fuse (``fused``) or split the attention and FFN projections, as the model with ``qkv_concat: fused`` names
    them (MindFormers' r1.5 layout)."""
    from mindkit.models import LlamaForCausalLM
    from mindkit.models.layers import no_random_init
    from mindkit.parallel.layout import full_shapes
    import dataclasses
    with no_random_init():
        model = LlamaForCausalLM(dataclasses.replace(model_config, qkv_concat=fused))
    expected = full_shapes(model)
    if model_config.tie_word_embeddings:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    return match_layout(state, expected, model_config.kv_heads)
