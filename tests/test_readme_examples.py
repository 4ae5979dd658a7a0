"""The README's ```python blocks, run as written on the real SmolLM2 (slow), in one namespace and in order.

A line ending in ``# -> text`` promises that ``text`` is printed by its block; each block's promises must appear
in its output in order. The streaming example must print exactly the answer the pipeline returns.
"""
import contextlib
import io
import os
import re

import pytest

from conftest import REPO

README = os.path.join(REPO, "README.md")
EXPECT = re.compile(r"#\s*->\s*(.+)$")


def python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def expectations(block):
    return [m.group(1).strip() for line in block.splitlines() if (m := EXPECT.search(line))]


def test_readme_has_checked_examples():
    blocks = python_blocks(open(README, encoding="utf-8").read())
    assert len(blocks) >= 4
    assert all(expectations(b) for b in blocks), "every example promises some output"
    code = "\n".join(blocks)
    for name in ("AutoConfig", "AutoModel", "AutoTokenizer", ".generate(", "pipeline(", "TextStreamer",
                 "TextIteratorStreamer", "Trainer("):
        assert name in code


@pytest.mark.slow
def test_readme_python_examples_run_and_print_what_they_promise(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # predict writes text_generation_result.txt and output/ here
    namespace = {"__name__": "__readme__"}
    for i, block in enumerate(python_blocks(open(README, encoding="utf-8").read())):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        printed, pos = out.getvalue(), 0
        for text in expectations(block):
            found = printed.find(text, pos)
            assert found >= 0, f"block {i + 1} should print {text!r} (after position {pos}); printed:\n{printed}"
            pos = found + len(text)
        if "TextStreamer(" in block:  # what streamed is the answer returned, word for word
            answer = namespace["result"][0]["text_generation_text"][0].split("assistant\n")[-1]
            assert printed.startswith(answer + "\n"), printed
    assert (tmp_path / "text_generation_result.txt").exists()  # Trainer.predict wrote MindFormers' result file
