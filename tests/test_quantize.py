"""Weight-only int8: per-row quantization error, the int8 model against the float one (logits, greedy tokens, op by op
and compiled), checkpoints round trip, tensor-parallel layouts of weights and scales, the C++ kernel against plain
MindSpore, and the real SmolLM2's greedy agreement (slow)."""
import ast
import os
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms
from conftest import REPO, SMOLLM2_CONFIG, TINY_CONFIG
from mindkit.checkpoint import load_weights, read_state, save_state
from mindkit.checkpoint.quantize import dequantize_state, quantize, quantize_state, quantized_names
from mindkit.config import load_yaml
from mindkit.errors import CheckpointError, ConfigError
from mindkit.generation import generate
from mindkit.generation.model_runner import ModelRunner
from mindkit.models import LlamaConfig, LlamaForCausalLM
from mindkit.ops.int8_matmul import Int8MatMul, kernel_library
from mindkit.parallel.layout import param_layouts, shard
from mindkit.parallel.tensor_parallel import TPGroup

PROMPTS = [[1, 5, 9, 30, 77, 120, 3, 44], [7, 7, 200, 13], [90, 4, 61, 2, 8, 150, 33, 21, 5, 17], [250, 3]]


def tiny(quant=None, tp=None, **changes):
    cfg = LlamaConfig.from_dict({**load_yaml(TINY_CONFIG)["model"]["model_config"], "quant_weight": quant, **changes})
    return LlamaForCausalLM(cfg, **({"tp": tp} if tp else {}))


def test_quantization_error_is_at_most_half_a_step_per_row():
    w = np.random.default_rng(0).standard_normal((16, 40)).astype(np.float32) * np.arange(1, 17)[:, None]
    w[3] = 0.0
    q, scale = quantize(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (16,)
    assert np.all(np.abs(q.astype(np.float32) * scale[:, None] - w) <= scale[:, None] / 2 + 1e-6 * np.abs(w))
    assert np.all(np.abs(np.delete(q, 3, 0)).max(axis=1) == 127) and not q[3].any()
    back = dequantize_state({"x.weight": q, "x.weight_scale": scale, "norm.weight": w[0]})
    assert set(back) == {"x.weight", "norm.weight"} and np.array_equal(back["x.weight"], q * scale[:, None])


def test_what_is_quantized(tiny_ckpt):
    untied = read_state(tiny_ckpt)
    names = quantized_names(untied)
    assert "lm_head.weight" in names and "model.layers.1.feed_forward.w2.weight" in names
    assert "model.tok_embeddings.embedding_weight" not in names and not any("norm" in n for n in names)
    tied = {k: v for k, v in untied.items() if k != "lm_head.weight"}
    assert "model.tok_embeddings.embedding_weight" in quantized_names(tied)
    assert quantized_names(quantize_state(untied)) == set()  # already int8: nothing left to do


def greedy_is_decisive(float_model, int8_model, prompt, new_tokens=8):
    """The float model's greedy tokens and whether int8 must reproduce them: at every step the float top-2 margin
    exceeds twice the int8 model's largest logit error on that same sequence (so no argmax can flip)."""
    tokens = generate(float_model, [prompt], max_new_tokens=new_tokens, eos_token_id=()).new_tokens[0]
    seq = [prompt + tokens]
    ref = float_model.forward_full(seq).asnumpy()[0, len(prompt) - 1:-1]
    err = np.abs(int8_model.forward_full(seq).asnumpy()[0, len(prompt) - 1:-1] - ref).max()
    top2 = np.sort(ref, -1)[:, -2:]
    return tokens, bool((top2[:, 1] - top2[:, 0]).min() > 2 * err), err


@pytest.mark.parametrize("tied", [False, True])
def test_int8_model_is_close_to_float_and_keeps_its_greedy_tokens(tied):
    ms.set_seed(1)
    float_model = tiny(tie_word_embeddings=tied)
    state = {p.name: p.asnumpy() for p in float_model.get_parameters()}
    int8_model = tiny("int8", tie_word_embeddings=tied)
    quantized = quantize_state(state)
    for p in int8_model.get_parameters():
        p.set_data(ms.Tensor(quantized[p.name]))
    assert ("model.tok_embeddings.embedding_weight_scale" in quantized) == tied
    ids = [PROMPTS[2]]
    ref, out = float_model.forward_full(ids).asnumpy(), int8_model.forward_full(ids).asnumpy()
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    decisive = 0
    for prompt in PROMPTS:
        tokens, must_match, err = greedy_is_decisive(float_model, int8_model, prompt)
        if must_match:
            decisive += 1
            assert generate(int8_model, [prompt], max_new_tokens=8, eos_token_id=()).new_tokens[0] == tokens
    assert decisive >= 2, "too few prompts with a decisive greedy path to test"


def test_compiled_int8_decode_equals_op_by_op():
    ms.set_seed(2)
    model = tiny("int8")
    for p in model.get_parameters():  # random int8 weights with plausible scales
        if p.dtype == ms.int8:
            p.set_data(ms.Tensor(np.random.default_rng(3).integers(-127, 128, p.shape).astype(np.int8)))
        elif p.name.endswith("_scale"):
            p.set_data(ms.Tensor(np.full(p.shape, 0.02 / 127 * 3, np.float32)))
    kw = dict(max_new_tokens=6, eos_token_id=())
    eager = generate(model, PROMPTS[:2], **kw)
    compiled = generate(model, PROMPTS[:2], runner=ModelRunner(model, compiled=True), **kw)
    assert compiled.new_tokens == eager.new_tokens


def test_checkpoints_round_trip_and_load_strictly(tiny_ckpt, tmp_path):
    state = read_state(tiny_ckpt)
    path = str(tmp_path / "int8.ckpt")
    save_state(quantize_state(state), path)
    assert os.path.getsize(path) < 0.4 * os.path.getsize(tiny_ckpt)
    from_int8, from_float = tiny("int8"), tiny("int8")
    load_weights(from_int8, path)
    load_weights(from_float, tiny_ckpt)  # quantized as it loads
    saved = read_state(path)
    for a, b in zip(from_int8.get_parameters(), from_float.get_parameters()):
        assert a.asnumpy().dtype == saved[a.name].dtype == b.asnumpy().dtype
        assert np.array_equal(a.asnumpy(), saved[a.name]) and np.array_equal(a.asnumpy(), b.asnumpy())
    assert saved["model.layers.0.attention.wq.weight"].dtype == np.int8
    with pytest.raises(CheckpointError, match="quant_weight: int8"):
        load_weights(tiny(), path)
    mixed = dict(state, **{"model.layers.0.attention.wq.weight": saved["model.layers.0.attention.wq.weight"]})
    save_state(mixed, str(tmp_path / "mixed.ckpt"))
    with pytest.raises(CheckpointError, match="wq.weight.*int8.*float"):
        load_weights(tiny(), str(tmp_path / "mixed.ckpt"))  # never silently cast int8 into a float model


@pytest.mark.parametrize("tied", [False, True])
def test_tensor_parallel_shards_equal_quantized_shards(tiny_ckpt, tied):
    """Column-split (axis 0) weights: the shard of the int8 weight and its scale is exactly the shard quantized on
    its own. Row-split (axis 1): the int8 columns of the full weight, with the whole (replicated) scale."""
    full = read_state(tiny_ckpt)
    if tied:
        del full["lm_head.weight"]
    q = quantize_state(full)
    for rank in (0, 1):
        tp = TPGroup(2, rank)
        model = tiny("int8", tp, tie_word_embeddings=tied)
        layouts = param_layouts(model)
        local = {p.name: tuple(p.shape) for p in model.get_parameters()}
        checked = set()
        for name, (axis, _) in layouts.items():
            if name + "_scale" not in layouts:
                continue
            weight, scale = (shard(q[n], *layouts[n]) for n in (name, name + "_scale"))
            assert weight.shape == local[name] and scale.shape == local[name + "_scale"]
            if axis == 0:
                alone = quantize(shard(full[name], 0, tp))
                assert np.array_equal(weight, alone[0]) and np.array_equal(scale, alone[1])
            else:
                assert axis == 1 and layouts[name + "_scale"][0] is None and np.array_equal(scale, q[name + "_scale"])
                assert np.array_equal(weight, np.split(q[name], 2, axis=1)[rank])
            checked.add(name)
        head = "model.tok_embeddings.embedding_weight" if tied else "lm_head.weight"
        assert {head} | {f"model.layers.0.{m}.weight" for m in ("attention.wq", "attention.wo", "feed_forward.w1",
                                                                 "feed_forward.w2")} <= checked


@pytest.mark.skipif(kernel_library() is None, reason="no int8 kernel here (needs g++, x86 AVX2/FMA)")
@pytest.mark.parametrize("jit", [False, True])
def test_kernel_equals_mindspore_reference(jit):
    rng = np.random.default_rng(0)
    kernel, reference = Int8MatMul(), Int8MatMul(use_kernel=False)
    assert kernel.kernel is not None and reference.kernel is None
    for m, n, k in [(1, 96, 64), (1, 37, 29), (5, 130, 72), (2, 8, 8), (33, 67, 41)]:
        x = ms.Tensor(rng.standard_normal((m, k)).astype(np.float32))
        w = ms.Tensor(rng.integers(-127, 128, (n, k)).astype(np.int8))
        s = ms.Tensor((rng.random(n) * 0.01).astype(np.float32))
        run = ms.jit(kernel.construct) if jit else kernel
        got, want = run(x, w, s).asnumpy(), reference(x, w, s).asnumpy()
        assert got.shape == (m, n)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_quant_weight_accepts_only_int8():
    with pytest.raises(ConfigError, match="quant_weight"):
        tiny("int4")


@pytest.mark.slow
def test_real_model_int8_greedy_agreement_and_size(tmp_path):
    """SmolLM2 quantized as it loads from its GGUF: greedy answers against float32 on reference prompts (reported;
    the model has near-ties, so a few tokens may differ), and the int8 checkpoint's size."""
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
