"""The fused decode kernels (mindkit/ops/decode_kernels.cc) against the plain-MindSpore layers they replace: the same
logits at every prefill and greedy decode step and the same KV-cache contents, op by op and compiled,
for Llama (separate and fused projections) and ChatGLM2 (interleaved RoPE on half of each head, MQA)."""
import os

import numpy as np
import pytest

import mindspore as ms
from conftest import REPO, TINY_CONFIG
from test_model_parity import randomize
from mindkit.config import load_yaml
from mindkit.generation.model_runner import ModelRunner
from mindkit.models import ChatGLM2Config, ChatGLM2ForConditionalGeneration, LlamaConfig, LlamaForCausalLM
from mindkit.models.causal_lm import CachedAttention
from mindkit.models.layers import FEW_ROWS, Linear, RMSNorm, SwiGLU
from mindkit.models.llama import LlamaAttention, LlamaDecodeLayer, LlamaFeedForward
from mindkit.ops import aot, decode_kernels

pytestmark = pytest.mark.skipif(aot.library(decode_kernels.SOURCE) is None, reason="kernels cannot be built here")
GLM2_CONFIG = os.path.join(REPO, "configs", "tiny", "predict_tiny_glm2.yaml")
PROMPTS = [[1, 5, 9, 30, 77, 120, 3, 44], [0, 0, 0, 7, 7, 200, 13, 2]]   # the second row left-padded


def build(kind, kernels, **changes):
    """A seeded random tiny model; ``kernels`` False builds it as MINDKIT_KERNELS=0 does."""
    os.environ["MINDKIT_KERNELS"] = "1" if kernels else "0"
    aot.library.cache_clear()
    try:
        if kind == "glm2":
            cfg = ChatGLM2Config.from_dict({**load_yaml(GLM2_CONFIG)["model"]["model_config"], **changes})
            model = ChatGLM2ForConditionalGeneration(cfg)
        else:
            cfg = LlamaConfig.from_dict({**load_yaml(TINY_CONFIG)["model"]["model_config"], **changes})
            model = LlamaForCausalLM(cfg)
    finally:
        del os.environ["MINDKIT_KERNELS"]
        aot.library.cache_clear()
    model.set_train(False)
    return randomize(model, seed=3)


def attention(model):
    return next(cell for _, cell in model.cells_and_names() if isinstance(cell, CachedAttention))


def steps(model, compiled, new_tokens=5, prompts=PROMPTS):
    """Logits of the prefill and of each greedy decode step (each step feeds its own argmax, so equal logits mean
    equal greedy tokens), and the KV caches afterwards."""
    runner = ModelRunner(model, compiled=compiled, prompt_bucket=8)
    ids = np.asarray(prompts, np.int32)
    B, P = ids.shape
    runner.begin(B, runner.slots_for(P + new_tokens))
    valid = np.zeros((B, runner.cache.slots), np.bool_)
    valid[:, :P] = ids != 0
    positions = np.maximum(np.cumsum(valid[:, :P], 1) - 1, 0).astype(np.int32)
    logits = [runner.prefill(ids, positions, valid)]
    for t in range(new_tokens):
        nxt = logits[-1].argmax(-1).astype(np.int32).reshape(B, 1)
        valid[:, P + t] = True
        positions = positions[:, -1:] + 1
        logits.append(runner.decode(nxt, positions, valid, P + t))
    caches = [np.stack([layer.k.asnumpy(), layer.v.asnumpy()]) for layer in runner.cache.layers]
    # a padding token's keys and values past the first layer come from its attention over no real slot: undefined
    return np.stack(logits), (np.stack(caches) * valid[:, None, :, None])[..., :P + new_tokens, :]


@pytest.mark.parametrize("kind,changes", [("llama", {"qkv_concat": False}), ("llama", {"qkv_concat": True}),
                                          ("glm2", {})])
@pytest.mark.parametrize("compiled", [False, True])
def test_kernels_equal_plain_ops(kind, changes, compiled):
    fused, plain = build(kind, True, **changes), build(kind, False, **changes)
    assert attention(fused).fused is not None and attention(plain).fused is None
    (got, got_cache), (want, want_cache) = steps(fused, compiled), steps(plain, compiled)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(got_cache, want_cache, rtol=1e-5, atol=1e-5 * np.abs(want_cache).max())


@pytest.mark.parametrize("kind,changes", [("llama", {"qkv_concat": False}), ("llama", {"qkv_concat": True}),
                                          ("glm2", {})])
def test_prefill_and_every_decode_step_of_a_full_batch_take_the_fused_attention(kind, changes):
    """FEW_ROWS rows, whatever the head layout of q (a fused QKV's q once counted as tokens x heads): attention's
    kernel, or Llama's decoder-layer kernel that holds it."""
    model = build(kind, True, **changes)
    calls = []
    for _, cell in model.cells_and_names():
        attr = {CachedAttention: "fused", LlamaDecodeLayer: "kernel"}.get(type(cell))
        if attr:
            setattr(cell, attr, lambda *args, kernel=getattr(cell, attr): calls.append(1) or kernel(*args))
    steps(model, compiled=False, new_tokens=2, prompts=[PROMPTS[0]] * FEW_ROWS)
    assert len(calls) == (1 + 2) * model.config.num_layers


def test_rms_norm_kernel_and_training_path():
    rng = np.random.default_rng(0)
    norm = RMSNorm(48, eps=1e-6)
    assert norm.fused is not None
    norm.weight.set_data(ms.Tensor(rng.standard_normal(48).astype(np.float32)))
    x = ms.Tensor(rng.standard_normal((3, 5, 48)).astype(np.float32) * 4)
    norm.set_train(False)
    fused = norm(x).asnumpy()
    norm.set_train(True)                       # the plain path, which has a gradient
    plain = norm(x).asnumpy()
    xn = x.asnumpy()
    want = xn / np.sqrt((xn ** 2).mean(-1, keepdims=True) + 1e-6) * norm.weight.asnumpy()
    np.testing.assert_allclose(fused, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(plain, want, rtol=1e-5, atol=1e-5)
    grad = ms.grad(lambda t: norm(t).sum())(x)
    assert grad.shape == x.shape and np.isfinite(grad.asnumpy()).all()


def test_elementwise_kernels_on_prefill_sized_inputs():
    """Hundreds of rows, split over threads, odd widths past the 8-wide vectors, and gates far into exp's
    over- and underflow, against float64."""
    rng = np.random.default_rng(2)
    for rows, width in [(700, 1536), (33, 13)]:
        gate = rng.standard_normal((rows, width)) * 6
        gate[0, :4] = [-150.0, -88.5, 89.0, 150.0]
        up = rng.standard_normal((rows, width))
        want = gate / (1 + np.exp(-gate)) * up
        got = decode_kernels.silu_mul()(ms.Tensor(gate, ms.float32), ms.Tensor(up, ms.float32)).asnumpy()
        pairs = np.stack([gate, up], -1).reshape(rows, 2 * width)
        got_pairs = decode_kernels.silu_mul_pairs()(ms.Tensor(pairs, ms.float32)).asnumpy()
        for out in (got, got_pairs):
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
        x, w = rng.standard_normal((rows, width)) * 3, rng.standard_normal(width)
        got = decode_kernels.rms_norm()(ms.Tensor(x, ms.float32), ms.Tensor(w, ms.float32),
                                        ms.Tensor([1e-6], ms.float32)).asnumpy()
        np.testing.assert_allclose(got, x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * w, rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_few_rows_matmul_kernel(jit):
    """Odd shapes: rows past the 2-row blocks, weight rows past the 8/4-row blocks, K past the 8-wide vectors; with
    and without the residual added in."""
    rng = np.random.default_rng(1)
    kernel = decode_kernels.matmul_t()

    def run(x, w, r):
        return kernel(x, w), kernel(x, w, r)
    run = ms.jit(run) if jit else run
    for m, n, k in [(1, 200, 64), (1, 13, 29), (2, 131, 77), (3, 70, 576), (8, 1030, 40), (16, 5, 3)]:
        x, w = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((n, k)).astype(np.float32)
        r = rng.standard_normal((m, n)).astype(np.float32)
        got, got_add = run(ms.Tensor(x), ms.Tensor(w), ms.Tensor(r))
        np.testing.assert_allclose(got.asnumpy(), x @ w.T, rtol=1e-5, atol=1e-5 * np.sqrt(k))
        np.testing.assert_allclose(got_add.asnumpy(), r + x @ w.T, rtol=1e-5, atol=1e-5 * np.sqrt(k))


@pytest.mark.parametrize("B,L,G,rep,hd,S,start", [(2, 3, 2, 3, 16, 29, 9), (1, 1, 3, 3, 64, 40, 20),
                                                   (2, 2, 1, 2, 12, 20, 5)])
def test_attention_kernel_against_numpy(B, L, G, rep, hd, S, start):
    """RoPE, the cache write and masked softmax attention over slots [0, start + l], in float64: key counts past
    and between the 8-key blocks, a head width without 8-wide vectors (12), scores masked out mid-sequence."""
    rng = np.random.default_rng(4)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    q, k, v, cos, sin = f32(B, L, G * rep, hd), f32(B, L, G, hd), f32(B, L, G, hd), f32(B, L, hd), f32(B, L, hd)
    partner = ((np.arange(hd) + hd // 2) % hd).astype(np.int32)
    sign = np.where(np.arange(hd) < hd // 2, -1.0, 1.0).astype(np.float32)
    k_cache, v_cache = f32(B, G, S, hd), f32(B, G, S, hd)
    mask = np.where(rng.random((B, L, S)) < 0.3, -1e9, 0.0).astype(np.float32)
    mask[:, :, 0] = 0.0                                                  # every token sees at least one slot
    caches = [ms.Parameter(ms.Tensor(c.copy())) for c in (k_cache, v_cache)]
    out = decode_kernels.cached_attention()(*map(ms.Tensor, (q, k, v, cos, sin, partner, sign)), *caches,
                                            ms.Tensor(mask), ms.Tensor(np.int32(start))).asnumpy()

    def rope(x, c, s_):
        return x * c + sign * x[..., partner] * s_
    for b in range(B):
        for l in range(L):
            k_cache[b, :, start + l] = rope(k[b, l], cos[b, l], sin[b, l])
            v_cache[b, :, start + l] = v[b, l]
    want = np.zeros((B, L, G * rep, hd))
    for b in range(B):
        for l in range(L):
            seen = start + l + 1
            for h in range(G * rep):
                kc, vc = k_cache[b, h // rep, :seen].astype(np.float64), v_cache[b, h // rep, :seen]
                scores = kc @ rope(q[b, l, h], cos[b, l], sin[b, l]) / np.sqrt(hd) + mask[b, l, :seen]
                p = np.exp(scores - scores.max())
                want[b, l, h] = p / p.sum() @ vc
    np.testing.assert_allclose(out.reshape(want.shape), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(caches[0].asnumpy(), k_cache, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(caches[1].asnumpy(), v_cache)


def kernel_calls(model):
    """Counts the launches of the decoder layers' kernels (eager), as "<cell type>.<kernel attribute>"; attention
    that carries the output projection counts as "CachedAttention.fused+wo"."""
    calls = {}

    def counted(name, kernel):
        def call(*args):
            key = name + ("+wo" if name == "CachedAttention.fused" and len(args) == 13 else "")
            calls[key] = calls.get(key, 0) + 1
            return kernel(*args)
        return call
    kinds = {RMSNorm: ("fused",), SwiGLU: ("fused",), CachedAttention: ("fused",), Linear: ("few_rows_matmul",),
             LlamaAttention: ("block",), LlamaFeedForward: ("block", "act"), LlamaDecodeLayer: ("kernel",)}
    for _, cell in model.model.layers.cells_and_names():
        for attr in kinds.get(type(cell), ()):
            if getattr(cell, attr) is not None:
                setattr(cell, attr, counted(f"{type(cell).__name__}.{attr}", getattr(cell, attr)))
    return calls


@pytest.mark.parametrize("qkv_concat", [False, True])
def test_a_llama_decode_step_is_one_kernel_a_layer(qkv_concat):
    """One launch a decoder layer and nothing else in it; its logits are test_kernels_equal_plain_ops'. A prefill
    past FEW_ROWS runs the separate kernels."""
    counts = []
    for new_tokens in (1, 2):
        model = build("llama", True, qkv_concat=qkv_concat)
        calls = kernel_calls(model)
        steps(model, compiled=False, new_tokens=new_tokens, prompts=[PROMPTS[0] * 3])
        counts.append(calls)
    layers = model.config.num_layers
    assert counts[0]["CachedAttention.fused"] == layers and counts[0]["RMSNorm.fused"] == 2 * layers  # prefill
    step = {k: counts[1][k] - counts[0].get(k, 0) for k in counts[1] if counts[1][k] != counts[0].get(k, 0)}
    assert step == {"LlamaDecodeLayer.kernel": layers}


@pytest.mark.parametrize("targets,blocks", [
    ([".*w_qkv", ".*wo", ".*w_gate_hidden", ".*w2"], set()),
    ([".*wo"], {"LlamaFeedForward.block"}),                 # the FFN is still one kernel, the attention is not
    ([".*w_gate_hidden"], {"LlamaAttention.block"})])
def test_lora_adapters_are_never_folded_away(targets, blocks):
    """A LoRA-adapted projection keeps its adapter in a decode step: the same logits as its merged weights. A block
    without adapters is still its one kernel, and the layer is never one."""
    from mindkit.models.lora import apply_lora, merge_lora
    tuned = build("llama", True, qkv_concat=True)
    apply_lora(tuned, {"pet_type": "lora", "lora_rank": 2, "lora_alpha": 4, "target_modules": targets})
    rng = np.random.default_rng(5)
    for p in tuned.get_parameters():
        if p.name.endswith("lora_b"):
            p.set_data(ms.Tensor(rng.standard_normal(p.shape).astype(np.float32) * 0.5))
    tuned.set_train(False)
    merged = build("llama", True, qkv_concat=True)
    state = merge_lora({p.name: p.asnumpy() for p in tuned.get_parameters()}, alpha=4, rank=2)
    for p in merged.get_parameters():
        p.set_data(ms.Tensor(state[p.name]))
    (got, _), (want, _) = steps(tuned, compiled=True), steps(merged, compiled=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    calls = kernel_calls(tuned)
    steps(tuned, compiled=False, new_tokens=1)
    assert {k for k in calls if k.endswith(".block") or k.endswith(".kernel")} == blocks


def test_one_token_prompt_into_a_row_of_a_shared_cache():
    """The server prefills a joining request alone into its row of the running batch's cache (row_views): a
    one-token prompt there takes the plain path, and lands in that row only."""
    from mindkit.generation.kv_cache import KVCache
    from mindkit.generation.row_cache import row_views
    out = []
    for kernels in (True, False):
        model = build("llama", kernels)
        cache = KVCache.for_model(model, 2, 16)
        logits = model(ms.Tensor([[7]], ms.int32), ms.Tensor([[0]], ms.int32), ms.Tensor(np.ones((1, 16), np.bool_)),
                       0, row_views(cache, 1))
        out.append((logits.asnumpy(), cache.layers[0].k.asnumpy()))
    (got, got_k), (want, want_k) = out
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(got_k, want_k, rtol=1e-5, atol=1e-5 * np.abs(want_k).max())
    assert not got_k[0].any() and got_k[1, :, 0].any()
