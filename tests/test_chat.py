"""scripts/chat.py driven through a pseudo-terminal as a user types: streamed answers equal to model.generate on the
conversation's prompt, the measurements line, history kept across turns, /clear, /exit and Ctrl-D."""
import importlib.util
import os
import re
import select
import subprocess
import sys
import termios
import time

import pytest

from conftest import REPO, SMOLLM2_CONFIG, TINY_CONFIG
from mindkit.api import AutoModel, AutoTokenizer
from mindkit.tokenizers.chat import Conversation

CHAT = os.path.join(REPO, "scripts", "chat.py")
STATS = re.compile(r"\[prompt (\d+) tokens \| first token ([\d.]+) s \| (\d+) tokens, ([\d.]+) tokens/s\]\n")
TURN = re.compile(r"Assistant: (.*?)\n" + STATS.pattern + r"\nUser: $", re.S)


class Terminal:
    """A child process on a pseudo-terminal (echo off, so the screen holds only what the program writes)."""

    def __init__(self, args, cwd, timeout=180):
        self.master, slave = os.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        self.err = open(os.path.join(cwd, "stderr.txt"), "w+")
        self.proc = subprocess.Popen([sys.executable, CHAT, *args], stdin=slave, stdout=slave, stderr=self.err,
                                     cwd=cwd, env={**os.environ, "PYTHONPATH": REPO})
        os.close(slave)
        self.timeout, self.screen = timeout, ""

    def expect(self, pattern):
        """Read until ``pattern`` matches what arrived since the last match; returns the match."""
        deadline = time.monotonic() + self.timeout
        pattern = re.compile(pattern, re.S) if isinstance(pattern, str) else pattern
        while not (m := pattern.search(self.screen)):
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                self.fail(f"timed out waiting for {pattern!r}")
            try:
                data = os.read(self.master, 4096)
            except OSError:  # the child closed the terminal
                data = b""
            if not data:
                self.fail(f"the program ended before {pattern!r}")
            self.screen += data.decode("utf-8", "replace").replace("\r\n", "\n")
        self.screen = self.screen[m.end():]
        return m

    def send(self, line):
        os.write(self.master, line.encode() + b"\n")

    def ask(self, question):
        self.send(question)
        return self.expect(TURN)

    def fail(self, why):
        self.proc.kill()
        self.err.seek(0)
        pytest.fail(f"{why}; screen: {self.screen!r}; stderr: {self.err.read()[-2000:]}")

    def close(self):
        self.proc.wait(timeout=60)
        os.close(self.master)
        self.err.close()
        return self.proc.returncode


def test_chat_streams_answers_keeps_history_and_times_them(tiny_ckpt, tiny_sp_model, tmp_path):
    vocab = f"--processor.tokenizer.vocab_file={tiny_sp_model}"
    term = Terminal(["--config", TINY_CONFIG, "--load_checkpoint", tiny_ckpt, vocab, "--max_new_tokens", "6",
                     "--output_dir", str(tmp_path / "out")], str(tmp_path))
    model = AutoModel.from_pretrained(TINY_CONFIG, load_checkpoint=tiny_ckpt, max_new_tokens=6,
                                      **{"processor.tokenizer.vocab_file": tiny_sp_model})
    tokenizer = AutoTokenizer.from_pretrained(TINY_CONFIG, **{"processor.tokenizer.vocab_file": tiny_sp_model})
    conversation = Conversation(tokenizer)  # the tiny tokenizer has no chat template: a plain transcript
    term.expect(r"/exit or Ctrl-D quits\)\n\nUser: $")
    question = "the cat sat on the mat"

    answers = []
    for turn in range(2):  # the same question twice: the second prompt carries the first turn
        ids = conversation.prompt_ids(question)
        new = model.generate(ids)[0][len(ids):]
        m = term.ask(question)
        answer, prompt_len, ttft, count, speed = m.group(1), *map(float, m.groups()[1:])
        assert answer == tokenizer.decode(new)  # streamed exactly the answer generated
        assert (prompt_len, count) == (len(ids), len(new)) and 1 <= count <= 6
        assert ttft > 0 and speed > 0
        conversation.add(question, answer.strip())
        answers.append((prompt_len, answer))
    assert answers[1][0] > answers[0][0] + len(tokenizer.encode(question))

    term.send("/clear")
    term.expect(r"\(conversation cleared\)\n\nUser: $")
    m = term.ask(question)
    assert (int(m.group(2)), m.group(1)) == answers[0]  # a fresh conversation: the first prompt and answer again
    term.send("/exit")
    assert term.close() == 0


@pytest.mark.slow
def test_real_smollm2_chat_remembers_the_country_and_quits_on_ctrl_d(tmp_path):
    term = Terminal(["--config", SMOLLM2_CONFIG, "--max_new_tokens", "20", "--output_dir", str(tmp_path / "out")],
                    str(tmp_path))
    term.expect(r"User: $")
    first = term.ask("What is the capital of France?")
    assert "Paris" in first.group(1)
    second = term.ask("And of Germany?")  # only answerable with the first turn in the prompt
    assert "Berlin" in second.group(1) and int(second.group(2)) > int(first.group(2)) + 8
    os.write(term.master, b"\x04")  # Ctrl-D: end of input
    assert term.close() == 0


class FakeTokenizer:
    """Ids are characters; ``chat_template`` as a Jinja string, optional."""
    chat_template = None

    def encode(self, text, add_special_tokens=True):
        return [ord(c) for c in text]

    def apply_chat_template(self, messages, add_generation_prompt=True):
        return self.encode("|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:")


class RoundTokenizer(FakeTokenizer):
    chat_template = "unused: build_prompt comes first"

    def build_prompt(self, query, history=None):  # ChatGLM2's
        rounds = [f"[Round {i + 1}]\n\n问：{q}\n\n答：{a}\n\n" for i, (q, a) in enumerate(history or [])]
        return "".join(rounds) + f"[Round {len(rounds) + 1}]\n\n问：{query}\n\n答："


def text(ids):
    return "".join(map(chr, ids))


def test_conversation_prompt_forms():
    templated = type("T", (FakeTokenizer,), {"chat_template": "{{ messages }}"})()
    for tok, first, second in [
        (RoundTokenizer(), "[Round 1]\n\n问：hi\n\n答：",
         "[Round 1]\n\n问：hi\n\n答：hello\n\n[Round 2]\n\n问：and?\n\n答："),
        (templated, "system:be brief|user:hi|assistant:",
         "system:be brief|user:hi|assistant:hello|user:and?|assistant:"),
        (FakeTokenizer(), "be brief\nUser: hi\nAssistant:", "be brief\nUser: hi\nAssistant: hello\nUser: and?\nAssistant:"),
    ]:
        system = None if isinstance(tok, RoundTokenizer) else "be brief"
        conversation = Conversation(tok, system)
        assert text(conversation.prompt_ids("hi")) == first
        conversation.add("hi", "hello")
        assert text(conversation.prompt_ids("and?")) == second
        conversation.clear()
        assert text(conversation.prompt_ids("hi")) == first


def test_oldest_turns_are_forgotten_past_seq_length(capsys):
    spec = importlib.util.spec_from_file_location("chat_script", CHAT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    conversation = Conversation(FakeTokenizer())
    for i in range(3):
        conversation.add(f"q{i}", "a" * 20)
    ids = script.prompt_within(conversation, "next", room=10, seq_length=80)
    assert len(ids) + 10 <= 80 and [q for q, _ in conversation.history] == ["q2"]
    assert capsys.readouterr().out.count("oldest turn is forgotten") == 2
