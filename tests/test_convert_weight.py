"""scripts/convert_weight.py: HuggingFace <-> .ckpt, .ckpt <-> .safetensors, fused <-> separate, precision, PyTorch
and GGUF imports — bit-exact round trips on a tiny random Llama, and the converted files load and predict alike."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, TINY_CONFIG
from mindkit.checkpoint import read_state
from mindkit.checkpoint.hf_names import mindformers_to_hf

SCRIPT = os.path.join(REPO, "scripts", "convert_weight.py")


def convert(*args, cwd, ok=True):
    proc = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    assert (proc.returncode == 0) == ok, proc.stderr[-2000:]
    return proc


def same(a, b):
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def logits(path, qkv_concat=False):
    from mindkit.checkpoint import load_weights
    from mindkit.config import load_yaml
    from mindkit.models import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig.from_dict({**load_yaml(TINY_CONFIG)["model"]["model_config"], "qkv_concat": qkv_concat})
    model = LlamaForCausalLM(cfg)
    load_weights(model, str(path))
    return model.forward_full([[1, 5, 9, 30, 77]]).asnumpy()


def test_huggingface_folder_to_ckpt_and_back_is_bit_exact(tiny_ckpt, tmp_path):
    from safetensors.numpy import save_file
    state = read_state(tiny_ckpt)
    hf_state, _ = mindformers_to_hf(state)
    assert "model.layers.0.self_attn.q_proj.weight" in hf_state and "model.embed_tokens.weight" in hf_state
    hf = tmp_path / "hf"
    hf.mkdir()
    names = sorted(hf_state)
    save_file({k: hf_state[k] for k in names[:10]}, str(hf / "model-00001-of-00002.safetensors"))
    save_file({k: hf_state[k] for k in names[10:]}, str(hf / "model-00002-of-00002.safetensors"))
    (hf / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        k: f"model-0000{1 if i < 10 else 2}-of-00002.safetensors" for i, k in enumerate(names)}}))
    (hf / "config.json").write_text("{}")
    convert("--input", hf, "--output", tmp_path / "from_hf.ckpt", cwd=tmp_path)
    assert same(read_state(str(tmp_path / "from_hf.ckpt")), state)
    convert("--input", tmp_path / "from_hf.ckpt", "--output", tmp_path / "back", "--to", "hf", "--model_config",
            TINY_CONFIG, cwd=tmp_path)
    from safetensors.numpy import load_file
    assert same(load_file(str(tmp_path / "back" / "model.safetensors")), hf_state)
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert (config["num_key_value_heads"], config["num_hidden_layers"]) == (2, 2)


def test_ckpt_safetensors_and_fused_round_trips_load_alike(tiny_ckpt, tmp_path):
    state = read_state(tiny_ckpt)
    convert("--input", tiny_ckpt, "--output", tmp_path / "a.safetensors", cwd=tmp_path)
    convert("--input", tmp_path / "a.safetensors", "--output", tmp_path / "b.ckpt", cwd=tmp_path)
    assert same(read_state(str(tmp_path / "b.ckpt")), state)
    convert("--input", tiny_ckpt, "--output", tmp_path / "fused.ckpt", "--qkv_concat", "true", "--model_config",
            TINY_CONFIG, cwd=tmp_path)
    fused = read_state(str(tmp_path / "fused.ckpt"))
    assert "model.layers.0.attention.w_qkv.weight" in fused and "model.layers.0.attention.wq.weight" not in fused
    convert("--input", tmp_path / "fused.ckpt", "--output", tmp_path / "split.ckpt", "--qkv_concat", "false",
            "--model_config", TINY_CONFIG, cwd=tmp_path)
    assert same(read_state(str(tmp_path / "split.ckpt")), state)
    assert np.abs(logits(tmp_path / "fused.ckpt", qkv_concat=True) - logits(tiny_ckpt)).max() < 1e-5


def test_precision_cast(tiny_ckpt, tmp_path):
    import mindspore as ms
    convert("--input", tiny_ckpt, "--output", tmp_path / "bf16.ckpt", "--dtype", "bfloat16", cwd=tmp_path)
    raw = ms.load_checkpoint(str(tmp_path / "bf16.ckpt"))
    assert all(p.dtype == ms.bfloat16 for p in raw.values())
    state, back = read_state(tiny_ckpt), read_state(str(tmp_path / "bf16.ckpt"))
    name = "model.layers.0.attention.wq.weight"
    expected = ms.Tensor(state[name]).astype(ms.bfloat16).astype(ms.float32).asnumpy()
    assert np.array_equal(back[name], expected)
    convert("--input", tmp_path / "bf16.ckpt", "--output", tmp_path / "fp32.ckpt", cwd=tmp_path)
    assert same(read_state(str(tmp_path / "fp32.ckpt")), back)  # bfloat16 values survive exactly
    assert np.abs(logits(tmp_path / "bf16.ckpt") - logits(tiny_ckpt)).max() < 0.05


def test_pytorch_state_dict(tiny_ckpt, tmp_path):
    """pt_to_ms with HF names in a .bin; without torch installed, a clear error says what to install."""
    state = read_state(tiny_ckpt)
    try:
        import torch
    except ImportError:
        (tmp_path / "model.bin").write_bytes(b"PK")
        proc = convert("--torch_ckpt_path", tmp_path / "model.bin", "--mindspore_ckpt_path", tmp_path / "x.ckpt",
                       cwd=tmp_path, ok=False)
        assert "torch installed" in proc.stderr
        return
    hf_state, _ = mindformers_to_hf(state)
    torch.save({k: torch.from_numpy(v) for k, v in hf_state.items()}, str(tmp_path / "model.bin"))
    convert("--torch_ckpt_path", tmp_path / "model.bin", "--mindspore_ckpt_path", tmp_path / "pt.ckpt", cwd=tmp_path)
    assert same(read_state(str(tmp_path / "pt.ckpt")), state)


def test_bad_inputs_are_one_line_and_nothing_is_overwritten(tiny_ckpt, tmp_path):
    from safetensors.numpy import save_file
    (tmp_path / "exists.ckpt").write_bytes(b"mine")
    cases = [(["--input", tiny_ckpt, "--output", tmp_path / "exists.ckpt"], "does not exist yet"),
             (["--input", tiny_ckpt, "--output", tiny_ckpt, "--force"], "other than --input"),
             (["--input", tiny_ckpt, "--output", tmp_path / "f.ckpt", "--qkv_concat", "true"], "--model_config"),
             (["--input", tmp_path / "none.ckpt", "--output", tmp_path / "o.ckpt"], "--input")]
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file({"model.layers.0.self_attn.rotary_emb.foo": np.zeros(2, np.float32)}, str(hf / "model.safetensors"))
    (hf / "config.json").write_text("{}")
    cases.append((["--input", hf, "--output", tmp_path / "h.ckpt"], "rotary_emb.foo"))
    for args, needle in cases:
        proc = convert(*args, cwd=tmp_path, ok=False)
        assert proc.stderr.strip().splitlines()[-1].startswith("error:") and needle in proc.stderr, proc.stderr
    assert (tmp_path / "exists.ckpt").read_bytes() == b"mine"


@pytest.mark.slow
def test_real_gguf_to_ckpt(tmp_path):
    from conftest import SMOLLM2_CONFIG
    from mindkit.config import load_yaml
    from mindkit.utils.paths import resolve_path
    gguf = resolve_path(load_yaml(SMOLLM2_CONFIG)["load_checkpoint"], "load_checkpoint")
    convert("--input", gguf, "--output", tmp_path / "smollm2.ckpt", cwd=tmp_path)
    assert same(read_state(str(tmp_path / "smollm2.ckpt")), read_state(gguf))
