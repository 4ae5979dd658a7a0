"""``input_data`` / ``--predict_data`` → a list of prompt strings: one or more strings, or a single existing text
file read one prompt per line (a literal ``\\n`` inside a line becomes a newline; blank lines are skipped)."""
import os

from mindkit.errors import InputError


def read_prompts(input_data, key="predict_data"):
    if input_data is None or input_data == [] or input_data == "":
        raise InputError(key, input_data, "one or more prompts, or a text file with one prompt per line")
    items = [input_data] if isinstance(input_data, str) else list(input_data)
    if len(items) == 1 and isinstance(items[0], str) and os.path.isfile(items[0]):
        path = items[0]
        try:
            with open(path, encoding="utf-8") as f:
                prompts = [line.rstrip("\r\n").replace("\\n", "\n") for line in f]
        except UnicodeDecodeError as e:
            raise InputError(key, path, "a UTF-8 text file", hint=f"byte {e.start} is not UTF-8") from None
        prompts = [p for p in prompts if p.strip()]
        if not prompts:
            raise InputError(key, path, "a file with at least one non-empty line")
        return prompts
    for i, p in enumerate(items):
        if not isinstance(p, str) or not p.strip():
            raise InputError(f"{key}[{i}]", p, "a non-empty string")
    return [str(p) for p in items]
