"""Weight-only int8: per-row quantization error, the int8 model close to the float one, checkpoints round trip,
tensor-parallel layouts of weights and scales, and the real SmolLM2's greedy agreement (slow)."""
import ast
import os
import subprocess
import sys

import numpy as np
import pytest


from conftest import REPO, SMOLLM2_CONFIG, TINY_CONFIG
from mindkit.checkpoint import load_weights, read_state, save_state
from mindkit.checkpoint.quantize import dequantize_state, quantize, quantize_state
from mindkit.config import load_yaml
from mindkit.errors import ConfigError
from mindkit.models import LlamaConfig, LlamaForCausalLM


def tiny(quant=None, tp=None):
    cfg = LlamaConfig.from_dict({**load_yaml(TINY_CONFIG)["model"]["model_config"], "quant_weight": quant})
    return LlamaForCausalLM(cfg, **({"tp": tp} if tp else {}))


def test_quantization_error_is_at_most_half_a_step_per_row():
    w = np.random.default_rng(0).standard_normal((16, 40)).astype(np.float32) * np.arange(1, 17)[:, None]
    q, scale = quantize(w)
    assert q.dtype == np.int8 and scale.shape == (16,)
    assert np.all(np.abs(q.astype(np.float32) * scale[:, None] - w) <= scale[:, None] / 2 + 1e-7)
    assert np.all(np.abs(q).max(axis=1) == 127)


def test_int8_model_is_close_to_float_and_loads_both_kinds(tiny_ckpt, tmp_path):
    state = read_state(tiny_ckpt)
    save_state(quantize_state(state), str(tmp_path / "int8.ckpt"))
    assert os.path.getsize(tmp_path / "int8.ckpt") < 0.6 * os.path.getsize(tiny_ckpt)
    ids = [[1, 5, 9, 30, 77, 120, 3, 44, 8, 19]]
    float_model = tiny()
    load_weights(float_model, tiny_ckpt)
    reference = float_model.forward_full(ids).asnumpy()
    from_int8, from_float = tiny("int8"), tiny("int8")
    load_weights(from_int8, str(tmp_path / "int8.ckpt"))
    load_weights(from_float, tiny_ckpt)  # quantized while loading
    a, b = from_int8.forward_full(ids).asnumpy(), from_float.forward_full(ids).asnumpy()
    assert np.array_equal(a, b)
    assert np.abs(a - reference).max() < 0.05 * np.abs(reference).max()
    assert (a.argmax(-1) == reference.argmax(-1)).mean() >= 0.9
    loaded = {p.name: p.asnumpy() for p in from_int8.get_parameters()}
    assert loaded["model.layers.0.attention.wq.weight"].dtype == np.int8
    saved = read_state(str(tmp_path / "int8.ckpt"))
    assert all(np.array_equal(loaded[k], saved[k]) for k in loaded)
    back = dequantize_state(saved)
    assert set(back) == set(state)


def test_tensor_parallel_splits_scales_with_rows_and_keeps_row_parallel_scales_whole(tiny_ckpt):
    from mindkit.parallel.layout import param_layouts, shard
    from mindkit.parallel.tensor_parallel import TPGroup
    full = quantize_state(read_state(tiny_ckpt))
    for rank in (0, 1):
        layouts = param_layouts(tiny("int8", TPGroup(2, rank)))
        assert layouts["model.layers.0.attention.wq.weight_scale"][0] == 0
        assert layouts["model.layers.0.attention.wo.weight_scale"][0] is None
        wo, scale = (shard(full[f"model.layers.0.attention.wo.{n}"], *layouts[f"model.layers.0.attention.wo.{n}"])
                     for n in ("weight", "weight_scale"))
        assert wo.shape == (64, 32) and scale.shape == (64,)
        wq, wq_scale = (shard(full[f"model.layers.0.attention.wq.{n}"], *layouts[f"model.layers.0.attention.wq.{n}"])
                        for n in ("weight", "weight_scale"))
        assert wq.shape[0] == wq_scale.shape[0] == 32


def test_quant_weight_accepts_only_int8():
    with pytest.raises(ConfigError, match="quant_weight"):
        tiny("int4")


@pytest.mark.slow
def test_real_model_int8_greedy_agreement_and_size(tmp_path):
    """SmolLM2 with int8 projections: reported agreement with float32 greedy tokens on reference prompts."""
    prompts = ["What is the capital of France?", "Name a color.", "Write a haiku about the sea."]
    outputs = {}
    for quant in ("null", "int8"):
        folder = tmp_path / quant
        folder.mkdir()
        proc = subprocess.run([sys.executable, os.path.join(REPO, "run_mindformer.py"), "--config", SMOLLM2_CONFIG,
                               "--max_new_tokens", "16", "--predict_data", *prompts,
                               f"--model.model_config.quant_weight={quant}"], cwd=folder, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results = ast.literal_eval((folder / "text_generation_result.txt").read_text(encoding="utf-8"))
        outputs[quant] = [t for r in results for t in r["text_generation_text"]]
    same = sum(a == b for a, b in zip(outputs["null"], outputs["int8"]))
    print(f"int8 vs float32 greedy: {same}/{len(prompts)} answers identical")
    assert same >= 2 and "Paris" in outputs["int8"][0]
