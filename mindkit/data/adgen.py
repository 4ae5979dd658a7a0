"""ADGEN-format data (MindFormers' ``ADGenDataLoader``): JSON lines ``{"content": ..., "summary": ...}``.

``data_loader: {type: ADGenDataLoader, dataset_dir: path/train.json, shuffle, phase: train|eval,
origin_columns: [content, summary]}``.

A line that is not a JSON object with non-empty string values for both columns is skipped and counted, as
MindFormers drops it; one warning gives the count, the first bad line's number and what was wrong. Blank lines are
not records and are passed over silently. A missing or unreadable file, a file with no usable line, and a file where
EVERY line lacks one column (e.g. no ``summary`` at all: an unlabelled file given as training or eval data) are
errors naming ``<section>.data_loader.dataset_dir``, the path and, for the last, the missing column. ``phase`` is
checked (``train`` or ``eval``) but reads the same: both phases need the answer (as label or as reference), so a line
without ``summary`` is skipped and counted in either.
"""
import json
import logging
import os
from collections import Counter

from mindkit.config.schema import check_choice
from mindkit.data.pipeline_keys import warn_unknown
from mindkit.errors import ConfigError, InputError
from mindkit.registry import register
from mindkit.utils.paths import resolve_path

logger = logging.getLogger("mindkit")

PHASES = ("train", "eval")
NOT_JSON = "not a JSON object"


@register("dataset")
class ADGenDataLoader:
    """``samples``: the usable (content, summary) string pairs in file order."""

    def __init__(self, dataset_dir=None, phase="train", shuffle=False, origin_columns=("content", "summary"),
                 key="train_dataset.data_loader", **kwargs):
        warn_unknown(key, kwargs)
        self.phase = check_choice(f"{key}.phase", phase, PHASES)
        if not (isinstance(origin_columns, (list, tuple)) and len(origin_columns) == 2
                and all(isinstance(c, str) for c in origin_columns)):
            raise ConfigError(f"{key}.origin_columns", origin_columns, "two column names: [prompt, answer]")
        self.key, self.shuffle = key, bool(shuffle)
        self.path = resolve_path(dataset_dir, f"{key}.dataset_dir")
        self.samples = read_pairs(self.path, tuple(origin_columns), f"{key}.dataset_dir")


def read_pairs(path, columns, key):
    """(source, target) pairs from a JSON-lines file; bad lines skipped, counted and reported once."""
    if not path or not os.path.isfile(path):
        raise InputError(key, path, f"an existing JSON-lines file of {{{', '.join(columns)}}} records")
    pairs, problems, first_bad, lines, number = [], Counter(), None, 0, 0
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                lines += 1
                lacking = _lacking(line, columns)
                if lacking:
                    problems.update(lacking)
                    first_bad = first_bad or number
                else:
                    record = json.loads(line, strict=False)
                    pairs.append(tuple(record[c] for c in columns))
    except UnicodeDecodeError:
        raise InputError(key, path, "a UTF-8 text file", hint=f"undecodable bytes after line {number}") from None
    bad = lines - len(pairs)
    if bad:
        logger.warning("%s: skipped %d bad line(s) (first: line %d; %s); kept %d", path, bad, first_bad,
                       _describe(problems), len(pairs))
    if not pairs:
        raise InputError(key, path, f"JSON lines with non-empty string '{columns[0]}' and '{columns[1]}'",
                         hint=_why_empty(problems, lines, columns))
    return pairs


def _lacking(line, columns):
    """What makes a line unusable: [] for a good line, else the columns without non-empty text (and NOT_JSON)."""
    try:
        record = json.loads(line, strict=False)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        return [NOT_JSON, *columns]  # it has no usable column either
    return [c for c in columns if not isinstance(record.get(c), str) or not record[c].strip()]


def _describe(problems):
    parts = [f"{NOT_JSON}: {problems[NOT_JSON]}"] if problems[NOT_JSON] else []
    columns = sorted((c, n) for c, n in problems.items() if c != NOT_JSON)
    if columns:
        parts.append("no text in: " + ", ".join(f"{c} x{n}" for c, n in columns))
    return "; ".join(parts)


def _why_empty(problems, lines, columns):
    if not lines:
        return "the file has no records"
    if problems[NOT_JSON] == lines:
        return f"none of its {lines} line(s) is a JSON object"
    for column in reversed(columns):  # the answer column first: an unlabelled file is the common mistake
        if problems[column] == lines:
            return f"'{column}' missing or not text on every line ({lines})"
    return f"no usable line among {lines}: {_describe(problems)}"
