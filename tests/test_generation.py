"""The generate loop on a tiny random Llama: compiled (mode 0) and op-by-op (mode 1) agree token for token,
lengths and EOS are honoured per row, streamers see the tokens."""
import io

import mindspore as ms
import numpy as np
import pytest

from mindkit.errors import InputError
from mindkit.generation import GenerationConfig, TextIteratorStreamer, TextStreamer, generate
from mindkit.generation.model_runner import ModelRunner
from mindkit.models import LlamaConfig, LlamaForCausalLM

PROMPTS = [[5, 9, 17, 33, 2 + 1], [40, 41], [7] * 11]


@pytest.fixture(scope="module")
def model():
    ms.set_device("CPU")
    ms.set_seed(1)
    cfg = LlamaConfig.from_dict(dict(hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=96,
                                     seq_length=96, compute_dtype="float32", param_init_type="float32",
                                     eos_token_id=2, pad_token_id=0))
    return LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def compiled(model):
    return ModelRunner(model, compiled=True, slot_bucket=32, prompt_bucket=16)


def test_compiled_equals_op_by_op_greedy(model, compiled):
    eager = generate(model, PROMPTS, max_new_tokens=12, eos_token_id=())
    for _ in range(2):  # the second call reuses the compiled graphs and the (not cleared) cache
        fast = generate(model, PROMPTS, max_new_tokens=12, eos_token_id=(), runner=compiled)
        assert fast.sequences == eager.sequences
    assert any(k[0] == "prefill" for k in compiled.compile_seconds)
    assert any(k[0] == "decode" for k in compiled.compile_seconds)


@pytest.mark.parametrize("compiled_step", [False, True])
def test_a_greedy_step_returns_the_argmax_of_its_logits(model, compiled_step):
    """Greedy generation takes token ids from the step itself (no B x vocab logits reach the host): the argmax of
    the logits the same step returns otherwise, at prefill and at a decode step."""
    runner = ModelRunner(model, compiled=compiled_step, slot_bucket=32)
    ids = np.array([[5, 9, 17], [40, 41, 7]], np.int32)
    B, P = ids.shape
    runner.begin(B, 32)
    valid = np.zeros((B, 32), np.bool_)
    valid[:, :P] = True
    positions = np.tile(np.arange(P, dtype=np.int32), (B, 1))
    logits, tokens = runner.prefill(ids, positions, valid), runner.prefill(ids, positions, valid, greedy=True)
    assert logits.shape == (B, 96) and tokens.shape == (B,) and (tokens == logits.argmax(-1)).all()
    valid[:, P] = True
    step = (tokens.astype(np.int32)[:, None], positions[:, -1:] + 1, valid, P)
    logits, tokens = runner.decode(*step), runner.decode(*step, greedy=True)
    assert (tokens == logits.argmax(-1)).all()


def test_compiled_equals_op_by_op_sampling(model, compiled):
    kw = dict(max_new_tokens=10, do_sample=True, top_k=20, top_p=0.9, temperature=0.8, seed=3, eos_token_id=())
    assert generate(model, PROMPTS, **kw).sequences == generate(model, PROMPTS, runner=compiled, **kw).sequences


def test_each_row_alone_equals_the_batch(model):
    batch = generate(model, PROMPTS, max_new_tokens=8, eos_token_id=())
    for prompt, seq in zip(PROMPTS, batch.sequences):
        assert generate(model, [prompt], max_new_tokens=8, eos_token_id=()).sequences[0] == seq


def test_same_seed_same_sample_other_seed_differs(model):
    kw = dict(max_new_tokens=16, do_sample=True, eos_token_id=())
    a = generate(model, PROMPTS[:1], seed=11, **kw).sequences
    assert a == generate(model, PROMPTS[:1], seed=11, **kw).sequences
    assert a != generate(model, PROMPTS[:1], seed=12, **kw).sequences


def test_eos_stops_each_row_independently(model):
    free = generate(model, PROMPTS, max_new_tokens=10, eos_token_id=())
    eos = free.new_tokens[0][3]  # row 0 emits this token at step 4: make it the EOS
    out = generate(model, PROMPTS, max_new_tokens=10, eos_token_id=(eos,))
    assert out.new_tokens[0] == free.new_tokens[0][:4]
    for row in range(1, len(PROMPTS)):
        new = free.new_tokens[row]
        expected = new[:new.index(eos) + 1] if eos in new else new
        assert out.new_tokens[row] == expected
    assert out.generated_tokens == sum(len(t) for t in out.new_tokens)


def test_max_length_counts_the_prompt(model):
    out = generate(model, PROMPTS, max_length=14, max_new_tokens=None, eos_token_id=())
    assert [len(s) for s in out.new_tokens] == [14 - 11] * 3  # the longest prompt (11) sets the budget
    out = generate(model, [[3] * 90], max_new_tokens=50, eos_token_id=())
    assert len(out.new_tokens[0]) == 96 - 90  # never past seq_length


def test_prompt_too_long_or_empty_is_an_input_error(model):
    with pytest.raises(InputError, match="seq_length"):
        generate(model, [[3] * 96], max_new_tokens=1)
    with pytest.raises(InputError, match="empty"):
        generate(model, [[]], max_new_tokens=1)


def test_streamers_receive_the_generated_text(model):
    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return "".join(f"t{i} " for i in ids)
    out_file = io.StringIO()
    out = generate(model, PROMPTS[1], max_new_tokens=6, eos_token_id=(),
                   streamer=TextStreamer(Tok(), skip_prompt=True, file=out_file))
    assert out_file.getvalue() == Tok().decode(out.new_tokens[0]) + "\n"
    it = TextIteratorStreamer(Tok(), skip_prompt=True, timeout=60)
    out = generate(model, PROMPTS[1], max_new_tokens=6, eos_token_id=(), streamer=it)
    assert "".join(it) == Tok().decode(out.new_tokens[0])


def test_generation_config_from_model_config(model):
    gen = GenerationConfig.from_model_config(model.config, top_k=5)
    assert gen.top_k == 5 and gen.eos_token_id == (2,) and gen.max_length == model.config.max_decode_length


def test_compiled_buckets_never_cut_the_answer_short(model, compiled):
    """Near seq_length (96) a bucketed prompt (40 -> 48) would leave 48 slots, not 56: pad exactly instead."""
    prompt = [[9] * 40]
    eager = generate(model, prompt, max_new_tokens=100, eos_token_id=())
    fast = generate(model, prompt, max_new_tokens=100, eos_token_id=(), runner=compiled)
    assert len(eager.new_tokens[0]) == 96 - 40
    assert fast.sequences == eager.sequences


def test_use_past_false_equals_cached_decoding():
    cfg = LlamaConfig.from_dict(dict(hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=96,
                                     seq_length=64, compute_dtype="float32", param_init_type="float32",
                                     use_past=False))
    ms.set_seed(2)
    no_cache = LlamaForCausalLM(cfg)
    with_cache = LlamaForCausalLM(LlamaConfig.from_dict({**cfg.to_dict(), "use_past": True}))
    for a, b in zip(with_cache.get_parameters(), no_cache.get_parameters()):
        a.set_data(b.data)
    kw = dict(max_new_tokens=10, eos_token_id=())
    assert generate(no_cache, PROMPTS, **kw).sequences == generate(with_cache, PROMPTS, **kw).sequences
    assert not ModelRunner(no_cache, compiled=True).compiled
