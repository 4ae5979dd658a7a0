"""ChatGLM2 against an independent NumPy reference (tests/numpy_glm2.py) on tiny random models: logits and KV-cache
greedy tokens in one process and split over 2 msrun processes (tensor parallel with 2, 1 and straddled KV groups;
pipeline stages); its tokenizer; config errors; and the shared paths end to end on the tiny config — a MindFormers-
named checkpoint transformed 1 -> 2 ranks and predicted under msrun, LoRA finetune, eval, and the server."""
import ast
import json
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

import numpy_glm2 as ref
from conftest import REPO
from test_model_parity import randomize
from test_finetune_eval import edit, evaluate, losses, tiny_yaml, zh_sp_model  # noqa: F401  (zh_sp_model: a fixture)
from glm2_parallel_worker import NEW_TOKENS, PROMPTS, VARIANTS, model_config
from mindkit.checkpoint import load_weights, read_state, save_state
from mindkit.config import load_yaml
from mindkit.errors import ConfigError
from mindkit.generation import generate
from mindkit.models import ChatGLM2Config, ChatGLM2ForConditionalGeneration

TINY = os.path.join(REPO, "configs", "tiny", "predict_tiny_glm2.yaml")
SERVE = os.path.join(REPO, "configs", "tiny", "serve_tiny_glm2.yaml")
GLM2_6B = os.path.join(REPO, "configs", "glm2", "predict_glm2_6b.yaml")
RUN = os.path.join(REPO, "run_mindformer.py")


def random_model(overrides=None, seed=0):
    """The tiny config's model (with ``overrides``), random weights scaled so logits are well separated."""
    return randomize(ChatGLM2ForConditionalGeneration(model_config(TINY, dict(overrides or {}))), seed)


def state_of(model):
    return {p.name: p.asnumpy() for p in model.get_parameters()}


def hp(cfg):
    return dict(num_heads=cfg.num_attention_heads, groups=cfg.kv_groups, kv_channels=cfg.kv_channels,
                eps=cfg.layernorm_epsilon, rope_ratio=cfg.rope_ratio)


def reference(model, prompts=PROMPTS, n=NEW_TOKENS):
    weights, h = state_of(model), hp(model.config)
    return ref.forward(weights, prompts[0], **h), [ref.greedy(weights, p, n, **h) for p in prompts]


# ---- one process -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [{}, {"multi_query_attention": False, "add_bias_linear": True,
                                            "rope_ratio": 3.0, "layernorm_epsilon": 1e-3}],
                         ids=["groups2", "mha-biases-rope_ratio-eps"])
def test_logits_and_cached_greedy_match_numpy(overrides):
    model = random_model(overrides)
    logits, greedy = reference(model)
    assert np.abs(model.forward_full([PROMPTS[0]]).asnumpy()[0] - logits).max() < 1e-4
    batch = generate(model, PROMPTS, max_new_tokens=NEW_TOKENS, eos_token_id=())   # left-padded batch, KV cache
    assert batch.new_tokens == greedy
    assert generate(model, PROMPTS[1], max_new_tokens=NEW_TOKENS, eos_token_id=()).new_tokens[0] == greedy[1]


def test_parameter_names_and_shapes_are_mindformers():
    cfg = model_config(TINY, {})
    shapes = {p.name: tuple(p.shape) for p in ChatGLM2ForConditionalGeneration(cfg).get_parameters()}
    layer = "transformer.encoder.layers.1."
    assert shapes == {**{n: s for n, s in shapes.items() if ".layers.0." in n}, **{
        "transformer.embedding.embedding_weight": (256, 64),
        layer + "input_layernorm.weight": (64,),
        layer + "self_attention.query_key_value.weight": ((4 + 2 * 2) * 16, 64),
        layer + "self_attention.query_key_value.bias": ((4 + 2 * 2) * 16,),
        layer + "self_attention.dense.weight": (64, 4 * 16),
        layer + "post_attention_layernorm.weight": (64,),
        layer + "mlp.dense_h_to_4h.weight": (2 * 96, 64),
        layer + "mlp.dense_4h_to_h.weight": (64, 96),
        "transformer.encoder.final_layernorm.weight": (64,),
        "transformer.output_layer.weight": (256, 64)}}


def test_numpy_reference_rotates_interleaved_pairs_of_the_first_half():
    """The reference itself: RoPE leaves the second half of a head alone and turns (2i, 2i+1) pairs."""
    x = np.random.default_rng(0).standard_normal((2, 5, 16))
    out = ref._rope(x, 10000.0)
    np.testing.assert_array_equal(out[..., 8:], x[..., 8:])
    np.testing.assert_array_equal(out[:, 0], x[:, 0])          # position 0: no turn
    pair = np.hypot(out[..., 0:8:2], out[..., 1:8:2])          # each pair keeps its length
    np.testing.assert_allclose(pair, np.hypot(x[..., 0:8:2], x[..., 1:8:2]), rtol=1e-12)
    assert np.abs(out[:, 1:, :8] - x[:, 1:, :8]).max() > 0.1


# ---- config ----------------------------------------------------------------------------------------------------------

def test_the_6b_config_loads_and_validates():
    from mindkit.config.sections import MindkitConfig
    from mindkit.runners.build import build_model_config, build_processor
    config = MindkitConfig.from_dict(load_yaml(GLM2_6B))
    cfg = build_model_config(config)
    assert isinstance(cfg, ChatGLM2Config)
    assert (cfg.num_layers, cfg.vocab_size, cfg.num_attention_heads, cfg.kv_groups, cfg.kv_channels,
            cfg.ffn_hidden_size, cfg.pre_seq_len, cfg.layernorm_epsilon) == (28, 65024, 32, 2, 128, 13696, "None", 1e-5)
    assert config.model["arch"]["type"] == "ChatGLM2ForConditionalGeneration"
    with pytest.raises(ConfigError, match="processor.tokenizer.vocab_file"):
        build_processor(config)        # no tokenizer.model shipped: the error names the key


@pytest.mark.parametrize("key,value,needle", [
    ("multi_query_group_num", 3, "model_config.multi_query_group_num.*divisor of num_attention_heads"),
    ("kv_channels", 18, "model_config.kv_channels.*multiple of 4"),
    ("rmsnorm", False, "model_config.rmsnorm"),
    ("pre_seq_len", 8, "model_config.pre_seq_len"),
    ("compute_dtype", "float64", "model_config.compute_dtype"),
    ("eos_token_id", 300, "model_config.eos_token_id.*vocab_size=256"),
    ("padded_vocab_size", 0, "model_config.padded_vocab_size"),
    ("num_attention_heads", "4", "model_config.num_attention_heads"),
])
def test_bad_values_name_the_key(key, value, needle):
    section = {**load_yaml(TINY)["model"]["model_config"], key: value}
    with pytest.raises(ConfigError, match=needle):
        ChatGLM2Config.from_dict(section, key="model.model_config")


def test_unknown_mindformers_keys_are_accepted():
    cfg = ChatGLM2Config.from_dict({**load_yaml(TINY)["model"]["model_config"], "use_kvcache_op": True,
                                    "is_flexible_shape": False, "hidden_dropout": 0.1})
    assert cfg.extras == {"use_kvcache_op": True, "is_flexible_shape": False}


@pytest.mark.parametrize("overrides,mp,key", [({}, 3, "parallel_config.model_parallel"),
                                              ({"ffn_hidden_size": 90}, 4, "parallel_config.model_parallel")])
def test_model_parallel_must_divide_heads_and_ffn(overrides, mp, key):
    from mindkit.parallel.tensor_parallel import TPGroup
    with pytest.raises(ConfigError, match=key + r".*\b" + str(mp)):
        ChatGLM2ForConditionalGeneration(model_config(TINY, overrides), tp=TPGroup(mp, 0))


# ---- tokenizer -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def glm_tok(tiny_sp_model):
    from mindkit.tokenizers import ChatGLM2Tokenizer
    return ChatGLM2Tokenizer(tiny_sp_model, bos_token="<sop>", eos_token="<eop>", pad_token="<pad>")


def test_tokenizer_specials_prefix_and_decode(glm_tok):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=glm_tok.vocab_file)
    n = sp.get_piece_size()
    assert [glm_tok.special[t] for t in ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop")] == list(range(n, n + 5))
    assert glm_tok.vocab_size == n + 5 <= model_config(TINY, {}).padded_vocab_size
    assert (glm_tok.bos_token_id, glm_tok.eos_token_id, glm_tok.pad_token_id) == (1, 2, 0)
    text = "the cat sat on the mat"
    ids = glm_tok.encode(text)
    assert ids == [n + 1, n + 3] + sp.encode(text)
    assert glm_tok.encode(text, add_special_tokens=False) == sp.encode(text)
    assert glm_tok.encode("sop [gMASK]", add_special_tokens=False) == sp.encode("sop [gMASK]")  # text stays text
    assert glm_tok.decode(ids + [2, 255]) == text
    assert glm_tok.decode(ids, skip_special_tokens=False) == "[gMASK]sop" + text


def test_build_prompt_and_chat_template(glm_tok):
    assert glm_tok.build_prompt("a dog") == "[Round 1]\n\n问：a dog\n\n答："
    history = [("the cat", "sat"), ("big red", "car")]
    expected = ("[Round 1]\n\n问：the cat\n\n答：sat\n\n[Round 2]\n\n问：big red\n\n答：car\n\n"
                "[Round 3]\n\n问：a dog\n\n答：")
    assert glm_tok.build_prompt("a dog", history) == expected
    messages = [{"role": r, "content": c} for q, a in history for r, c in (("user", q), ("assistant", a))]
    chat = glm_tok.apply_chat_template(messages + [{"role": "user", "content": "a dog"}])
    assert chat == glm_tok.prefix_tokens() + glm_tok.sp.encode(expected)
    from mindkit.errors import InputError
    with pytest.raises(InputError, match="user and assistant turns only"):
        glm_tok.apply_chat_template([{"role": "system", "content": "x"}])


def test_processor_from_the_tiny_config(tiny_sp_model):
    from mindkit.config.sections import MindkitConfig
    from mindkit.runners.build import build_processor
    tree = load_yaml(TINY)
    tree["processor"]["tokenizer"]["vocab_file"] = tiny_sp_model
    processor = build_processor(MindkitConfig.from_dict(tree))
    assert processor.encode(["one two"])[0][:2] == processor.tokenizer.prefix_tokens()


# ---- msrun: the model split over two processes -----------------------------------------------------------------------

def test_tensor_and_pipeline_parallel_match_numpy(tmp_path):
    """One launch: tensor parallel over 2 ranks with 2, 1 and straddled KV groups, and 2 pipeline stages."""
    from test_launcher import free_port, launch
    expected = {}
    for i, (name, (overrides, _)) in enumerate(VARIANTS.items()):
        model = random_model(overrides, seed=10 + i)
        save_state(state_of(model), str(tmp_path / f"{name}.ckpt"))
        expected[name] = reference(model)
    out = tmp_path / "parallel.npz"
    worker = os.path.join(REPO, "tests", "glm2_parallel_worker.py")
    proc = launch([f"{worker} {TINY} {tmp_path} {out}", "2", str(free_port()), str(tmp_path / "log"), "True", "240"],
                  tmp_path)
    assert proc.returncode == 0, "".join(p.read_text(errors="replace") for p in (tmp_path / "log").iterdir())[-3000:]
    got = np.load(out)
    for name, (logits, greedy) in expected.items():
        assert np.abs(got[f"{name}/logits"] - logits).max() < 1e-4, name
        assert got[f"{name}/tokens"].tolist() == greedy, name
    assert {n: int(got[f"{n}/kv_heads"]) for n in VARIANTS} == {"tp-groups2": 1, "tp-groups1": 1,
                                                                 "tp-heads6-groups3": 2, "pp-groups2": 2}


# ---- the shared paths end to end -------------------------------------------------------------------------------------

PREDICT_PROMPTS = ["the cat sat on the mat", "a dog ran far away", "big red car"]


def cli(args, cwd, timeout=600):
    proc = subprocess.run([sys.executable, RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def tiny_glm2(tmp_path_factory, tiny_sp_model):
    """A random tiny ChatGLM2 as one .ckpt with MindFormers names, and its single-process predict run."""
    folder = tmp_path_factory.mktemp("glm2")
    ckpt = str(folder / "tiny_glm2.ckpt")
    save_state(state_of(random_model(seed=7)), ckpt)
    args = ["--config", TINY, f"--processor.tokenizer.vocab_file={tiny_sp_model}", "--max_new_tokens", "12",
            "--predict_batch_size", "1", "--predict_data", *PREDICT_PROMPTS]
    proc = cli([*args, "--load_checkpoint", ckpt, "--output_dir", str(folder / "output")], folder)
    results = ast.literal_eval((folder / "text_generation_result.txt").read_text(encoding="utf-8"))
    answers = [line[len("answer: "):] for line in proc.stdout.split("\n") if line.startswith("answer: ")]
    return dict(ckpt=ckpt, args=args, results=results, answers=answers)


def test_transformed_checkpoint_predicts_the_same_under_msrun_tp2(tiny_glm2, tmp_path):
    from test_launcher import free_port, launch
    texts = [t for r in tiny_glm2["results"] for t in r["text_generation_text"]]
    assert [t[:len(p)] for t, p in zip(texts, PREDICT_PROMPTS)] == PREDICT_PROMPTS
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "transform_checkpoint.py"),
                           "--model_config", TINY, "--src_checkpoint", tiny_glm2["ckpt"], "--dst_layout", "tp=2",
                           "--dst_checkpoint_dir", str(tmp_path / "tp2")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    full, shards = read_state(tiny_glm2["ckpt"]), [read_state(str(tmp_path / "tp2" / f"rank_{r}")) for r in (0, 1)]
    qkv = "transformer.encoder.layers.0.self_attention.query_key_value."
    for name, axis in ((qkv + "weight", 0), (qkv + "bias", 0),
                       ("transformer.encoder.layers.1.mlp.dense_4h_to_h.weight", 1)):  # contiguous blocks
        assert np.array_equal(np.concatenate([s[name] for s in shards], axis=axis), full[name]), name
    quoted = " ".join(f"'{a}'" for a in tiny_glm2["args"])
    cmd = (f"{RUN} {quoted} --load_checkpoint {tmp_path / 'tp2'} --use_parallel True "
           "--parallel_config.model_parallel 2")
    proc = launch([cmd, "2", str(free_port()), "output/msrun_log", "True", "240"], tmp_path)
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "output" / "msrun_log").iterdir())
    assert proc.returncode == 0, logs[-3000:]
    assert ast.literal_eval((tmp_path / "text_generation_result.txt").read_text(encoding="utf-8")) == \
        tiny_glm2["results"]
    assert (tmp_path / "output" / "strategy" / "ckpt_strategy_rank_1.ckpt").exists()


def test_server_answers_as_offline_predict(tiny_glm2, tiny_sp_model, tmp_path):
    from mindkit.serve import client
    from test_serve import Server
    server = Server(["--config", SERVE, "--load_checkpoint", tiny_glm2["ckpt"],
                     f"--processor.tokenizer.vocab_file={tiny_sp_model}", "--output_dir", str(tmp_path / "out")],
                    tmp_path)
    try:
        body = {"prompt": PREDICT_PROMPTS[1], "max_tokens": 12, "temperature": 0}
        answer = client.post(server.base, "/v1/completions", body)["choices"][0]["text"]
        chat = client.post(server.base, "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "a dog"}], "max_tokens": 4, "temperature": 0})
    finally:
        assert server.stop() == 0, server.output()[-3000:]
    assert answer == tiny_glm2["answers"][1]
    assert chat["usage"]["prompt_tokens"] == len(server_prompt_ids(tiny_sp_model, "a dog"))


def server_prompt_ids(vocab_file, text):
    from mindkit.tokenizers import ChatGLM2Tokenizer
    tok = ChatGLM2Tokenizer(vocab_file)
    return tok.apply_chat_template([{"role": "user", "content": text}])


def test_lora_finetune_then_eval(tiny_glm2, zh_sp_model, tmp_path):
    """LoRA on query_key_value and the dense layers through run_mindformer: only adapters train and are saved, the
    base stays bit-identical; eval runs on base + adapter."""
    yaml = edit(tiny_yaml(tmp_path, zh_sp_model, "pet_config: {pet_type: lora, lora_rank: 4, lora_alpha: 8, "
                          "target_modules: '.*query_key_value|.*dense.*'}\n", base=TINY),
                ("epochs: 6", "epochs: 1"), ("max_new_tokens: 40", "max_new_tokens: 8"))
    base_before = read_state(tiny_glm2["ckpt"])
    proc = cli(["--config", yaml, "--run_mode", "finetune", "--load_checkpoint", tiny_glm2["ckpt"], "--output_dir",
                str(tmp_path / "out"), "--options", "train_dataset.num_samples=24"], tmp_path)
    curve = losses(proc.stderr)
    assert len(curve) == 3 and all(np.isfinite(curve)), curve
    (final,) = (tmp_path / "out" / "checkpoint" / "rank_0").iterdir()
    saved = read_state(str(final))
    adapters = sorted(k for k in saved if "mindpet_delta_lora" in k and not k.startswith("adam_"))
    assert len(adapters) == 2 * 2 * 4      # 2 layers x {query_key_value, dense, dense_h_to_4h, dense_4h_to_h} x (a, b)
    assert all(k in adapters or k.startswith(("adam_", "global_step", "epoch_num", "step_num", "loss_scale"))
               for k in saved)
    assert any(np.abs(saved[k]).max() > 0 for k in adapters if k.endswith("lora_b"))    # they did train
    base_after = read_state(tiny_glm2["ckpt"])
    assert all(np.array_equal(base_before[k], base_after[k]) for k in base_before)
    tuned = evaluate(yaml, str(final), tmp_path, str(tmp_path / "eval_tuned"),
                     ["--model.model_config.checkpoint_name_or_path", tiny_glm2["ckpt"],
                      "--options", "eval_dataset.num_samples=4", "eval_dataset.batch_size=4"])
    assert set(tuned) == {"ADGENMetric", "PerplexityMetric"} and np.isfinite(tuned["PerplexityMetric"]["PPL"])


@pytest.mark.slow
def test_compiled_steps_greedy_match_numpy():
    """context.mode 0: prefill and decode compiled by mindspore.jit (~20 s of compiling here)."""
    from mindkit.generation.model_runner import ModelRunner
    model = random_model(seed=3)
    runner = ModelRunner(model, compiled=True, slot_bucket=32, prompt_bucket=16)
    out = generate(model, PROMPTS, max_new_tokens=NEW_TOKENS, eos_token_id=(), runner=runner)
    assert out.new_tokens == reference(model)[1] and len(runner.compile_seconds) == 2
