"""ADGEN-format data (MindFormers' ``ADGenDataLoader``): JSON lines ``{"content": ..., "summary": ...}``.

Lines that are not JSON objects with string ``content`` and ``summary`` are skipped and counted (one log line with
the count and the first bad line's number), as MindFormers skips them; a file with no usable line at all is an error
naming the key and the column that was missing.
"""
import json
import logging
import os

from mindkit.errors import InputError
from mindkit.registry import register
from mindkit.utils.paths import resolve_path

logger = logging.getLogger("mindkit")


@register("dataset")
class ADGenDataLoader:
    def __init__(self, dataset_dir, phase="train", origin_columns=("content", "summary"), shuffle=False,
                 key="train_dataset.data_loader.dataset_dir", **ignored):
        self.path, self.phase, self.shuffle = resolve_path(dataset_dir, key), phase, shuffle
        self.source, self.target = list(origin_columns)[:2]
        self.key = key
        self.samples = self._read()

    def _read(self):
        if not self.path or not os.path.isfile(self.path):
            raise InputError(self.key, self.path, "an existing JSON-lines file of {content, summary} records")
        samples, bad, first_bad, missing = [], 0, None, {}
        with open(self.path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                lacking = [c for c in (self.source, self.target)
                           if not isinstance(record, dict) or not isinstance(record.get(c), str)]
                if lacking:
                    bad, first_bad = bad + 1, first_bad or number
                    for c in lacking:
                        missing[c] = missing.get(c, 0) + 1
                    continue
                samples.append((record[self.source], record[self.target]))
        if bad:
            logger.warning("%s: skipped %d bad line(s) (first: line %d; missing or not text: %s)", self.path, bad,
                           first_bad, ", ".join(f"{c} x{n}" for c, n in missing.items()))
        if not samples:
            column = max(missing, key=missing.get) if missing else self.source
            raise InputError(self.key, self.path, f"JSON lines with string '{self.source}' and '{self.target}'",
                             hint=f"no usable line; '{column}' missing or not text in {missing.get(column, 0)}")
        return samples
