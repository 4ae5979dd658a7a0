"""Weight-only int8 by groups: the error per group, llama.cpp's Q4_1 and Q8_0 blocks reproduced exactly, the int8 model
against the float one (logits, greedy tokens, op by op and compiled), checkpoints round trip, tensor-parallel layouts
of weights, scales and offsets, the C++ kernel against plain MindSpore, and the real SmolLM2's greedy agreement and
size (slow)."""
import ast
import os
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms
from conftest import REPO, SMOLLM2_CONFIG, TINY_CONFIG
from mindkit.checkpoint import load_weights, read_state, save_state
from mindkit.checkpoint.quantize import (GROUP_SIZE, dequantize, dequantize_state, quantize, quantize_state,
                                         quantized_names)
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


@pytest.mark.parametrize("group", [8, 32])
def test_quantization_error_is_at_most_half_a_step_per_group(group):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 96)).astype(np.float32) * rng.random((16, 96 // group)).repeat(group, 1) * 10
    w[3] = 0.0
    w[4, :group] = 2.5                       # a constant group
    w[5] += 3.0                              # off-centre: the asymmetric fit wins
    w[6] = rng.integers(-127, 128, 96) * 0.01
    w[6, ::group] = 1.27                     # whole multiples of max|w| / 127: the symmetric fit is exact
    q, scale, offset = quantize(w, group)
    assert q.dtype == np.int8 and scale.dtype == offset.dtype == np.float32
    assert scale.shape == offset.shape == (16, 96 // group)
    step = np.repeat(scale, group, 1)
    assert np.all(np.abs(dequantize(q, scale, offset) - w) <= step / 2 + 1e-6 * np.abs(w))
    assert not q[3].any() and np.array_equal(dequantize(q, scale, offset)[4, :group], w[4, :group])
    assert (offset[5] != 0).all() and not offset[6].any()
    np.testing.assert_allclose(dequantize(q, scale, offset)[6], w[6], rtol=1e-6)
    back = dequantize_state({"x.weight": q, "x.weight_scale": scale, "x.weight_offset": offset, "norm.weight": w[0]})
    assert set(back) == {"x.weight", "norm.weight"} and np.array_equal(back["x.weight"], dequantize(q, scale, offset))
    with pytest.raises(ValueError, match="does not divide the 96 input columns"):
        quantize(w, 64)


def q4_1_blocks(rng, rows, cols):
    """Weights as llama.cpp's Q4_1 stores them: per block of 32, float16 d and m, w = d * q + m with q in 0..15 (its
    quantizer maps each block's min to 0 and its max to 15)."""
    shape = (rows, cols // 32, 1)
    d = (rng.random(shape) * 0.05 + 1e-3).astype(np.float16).astype(np.float32)
    m = (rng.standard_normal(shape) * 0.1).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, (rows, cols // 32, 32))
    q[..., 0], q[..., 1] = 0, 15
    return (d * q + m).reshape(rows, cols), q.reshape(rows, cols)


def test_llama_cpp_q4_1_and_q8_0_blocks_are_reproduced_exactly():
    from gguf import GGMLQuantizationType, quants
    rng = np.random.default_rng(1)
    w, q4 = q4_1_blocks(rng, 24, 576)
    q, scale, offset = quantize(w)
    assert np.array_equal(q.astype(np.int32) + 128, 17 * q4)  # each Q4_1 level is an int8 level
    np.testing.assert_allclose(dequantize(q, scale, offset), w, rtol=0, atol=4e-7 * np.abs(w).max())
    floats = rng.standard_normal((24, 576)).astype(np.float32)
    for kind in (GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q8_0):  # gguf's own quantizer
        w = quants.dequantize(quants.quantize(floats, kind), kind)
        np.testing.assert_allclose(dequantize(*quantize(w)), w, rtol=0, atol=4e-7 * np.abs(w).max())


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
        elif p.name.endswith("_offset"):
            p.set_data(ms.Tensor(np.random.default_rng(4).uniform(-0.01, 0.01, p.shape).astype(np.float32)))
    kw = dict(max_new_tokens=6, eos_token_id=())
    eager = generate(model, PROMPTS[:2], **kw)
    compiled = generate(model, PROMPTS[:2], runner=ModelRunner(model, compiled=True), **kw)
    assert compiled.new_tokens == eager.new_tokens


def test_checkpoints_round_trip_and_load_strictly(tiny_ckpt, tmp_path):
    state = read_state(tiny_ckpt)
    path = str(tmp_path / "int8.ckpt")
    save_state(quantize_state(state), path)
    assert os.path.getsize(path) < 0.42 * os.path.getsize(tiny_ckpt)  # the untied embedding stays float
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
    with pytest.raises(CheckpointError, match="_(scale|offset): got 'shape .*groups are 32 inputs wide.*group_size"):
        load_weights(tiny("int8", quant_group_size=16), path)
    per_row = {k: v[:, 0] if k.endswith("_scale") else v for k, v in saved.items() if not k.endswith("_offset")}
    save_state(per_row, str(tmp_path / "per_row.ckpt"))
    with pytest.raises(CheckpointError, match="_offset: got 'missing'.*one scale per row"):
        load_weights(tiny("int8"), str(tmp_path / "per_row.ckpt"))
    mixed = dict(state, **{"model.layers.0.attention.wq.weight": saved["model.layers.0.attention.wq.weight"]})
    save_state(mixed, str(tmp_path / "mixed.ckpt"))
    with pytest.raises(CheckpointError, match="wq.weight.*int8.*float"):
        load_weights(tiny(), str(tmp_path / "mixed.ckpt"))  # never silently cast int8 into a float model


def test_convert_to_int8_with_a_group_size(tiny_ckpt, tmp_path):
    from mindkit.checkpoint.convert import convert_weights
    out = str(tmp_path / "int8_g16.ckpt")
    convert_weights(tiny_ckpt, out, quant_weight="int8", quant_group_size=16, dtype="bfloat16")
    stored = ms.load_checkpoint(out)
    wq = "model.layers.0.attention.wq.weight"
    assert stored[wq].dtype == ms.int8 and stored[wq + "_offset"].shape == (64, 4)
    assert stored[wq + "_scale"].dtype == stored["lm_head.weight_offset"].dtype == ms.float32  # not cast
    assert stored["model.norm_out.weight"].dtype == ms.bfloat16
    load_weights(tiny("int8", quant_group_size=16), out)
    for bad in (12, 128):
        with pytest.raises(CheckpointError, match=f"--quant_group_size: got {bad}"):
            convert_weights(tiny_ckpt, str(tmp_path / f"g{bad}.ckpt"), quant_weight="int8", quant_group_size=bad)


@pytest.mark.parametrize("tied", [False, True])
def test_tensor_parallel_shards_equal_quantized_shards(tiny_ckpt, tied):
    """Every int8 weight's shard with its scales and offsets, split along with it (rows, or columns on group
    boundaries), is exactly that shard of the float weight quantized on its own."""
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
            names = [name, name + "_scale", name + "_offset"]
            assert {layouts[n][0] for n in names} == {axis} and axis in (0, 1)
            parts = [shard(q[n], *layouts[n]) for n in names]
            assert [part.shape for part in parts] == [local[n] for n in names]
            alone = quantize(shard(full[name], axis, tp))
            assert all(np.array_equal(a, b) for a, b in zip(parts, alone))
            checked.add((name, axis))
        head = "model.tok_embeddings.embedding_weight" if tied else "lm_head.weight"
        assert {(head, 0)} | {(f"model.layers.0.{m}.weight", axis) for m, axis in (
            ("attention.wq", 0), ("attention.wo", 1), ("feed_forward.w1", 0), ("feed_forward.w2", 1))} <= checked


def test_a_column_split_must_fall_on_group_boundaries():
    # hidden 64 split in two: each rank's wo and w2 hold 32 input columns, less than a group of 64
    with pytest.raises(ConfigError, match="quant_group_size: got 64; expected a divisor of the 32 input columns"):
        tiny("int8", TPGroup(2, 0), quant_group_size=64)


@pytest.mark.skipif(kernel_library() is None, reason="no int8 kernel here (needs g++, x86 AVX2/FMA)")
@pytest.mark.parametrize("jit", [False, True])
def test_kernel_equals_mindspore_reference(jit):
    rng = np.random.default_rng(0)
    kernel, reference = Int8MatMul(), Int8MatMul(use_kernel=False)
    assert kernel.kernel is not None and reference.kernel is None
    run = ms.jit(kernel.construct) if jit else kernel
    # odd sizes, M = 1 and the M > 1 path, groups of 8 to 64, and sizes large enough to be split over threads
    for m, n, k, group in [(1, 96, 64, 32), (1, 37, 24, 8), (5, 130, 72, 24), (2, 8, 8, 8), (33, 67, 96, 32),
                           (3, 5, 128, 64), (16, 13, 128, 16), (1, 1031, 256, 32), (7, 1031, 256, 32)]:
        x = ms.Tensor(rng.standard_normal((m, k)).astype(np.float32))
        w = ms.Tensor(rng.integers(-128, 128, (n, k)).astype(np.int8))
        s = ms.Tensor((rng.random((n, k // group)) * 0.01).astype(np.float32))
        o = ms.Tensor((rng.standard_normal((n, k // group)) * 0.01).astype(np.float32))
        got, want = run(x, w, s, o).asnumpy(), reference(x, w, s, o).asnumpy()
        assert got.shape == (m, n)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        r = ms.Tensor(rng.standard_normal((m, n)).astype(np.float32))   # a residual added in the same launch
        got, want = run(x, w, s, o, r).asnumpy(), reference(x, w, s, o, r).asnumpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        np.testing.assert_allclose(want, reference(x, w, s, o).asnumpy() + r.asnumpy(), rtol=1e-6, atol=1e-6)


def test_quant_config_accepts_only_int8_and_groups_that_divide_the_widths():
    assert LlamaConfig().quant_group_size == GROUP_SIZE
    with pytest.raises(ConfigError, match="quant_weight"):
        tiny("int4")
    for bad in (12, 0, 48):  # not a multiple of 8, not positive, not a divisor of hidden_size 64
        with pytest.raises(ConfigError, match=f"quant_group_size: got {bad}; expected a multiple of 8"):
            tiny("int8", quant_group_size=bad)


@pytest.mark.slow
def test_real_model_int8_greedy_agreement_and_size(tmp_path):
    """SmolLM2 quantized as it loads from its GGUF gives float32's greedy answers (its Q4_1 and Q8_0 blocks are int8
    groups exactly), and the int8 weights take under a third of the float32 bytes."""
    from mindkit.utils.paths import resolve_path
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
    assert outputs["int8"] == outputs["null"] and "Paris" in outputs["int8"][0]
    state = read_state(resolve_path(load_yaml(SMOLLM2_CONFIG)["load_checkpoint"], "load_checkpoint"))
    float_bytes = sum(v.nbytes for v in state.values())
    int8_bytes = sum(v.nbytes for v in quantize_state(state).values())
    print(f"int8 weights: {int8_bytes / 2**20:.1f} MiB, float32: {float_bytes / 2**20:.1f} MiB")
    assert int8_bytes < 0.32 * float_bytes
