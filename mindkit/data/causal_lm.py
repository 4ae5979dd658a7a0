"""Plain causal-LM data for continued training: a .txt file (one document per line) or a .npy array of token ids,
packed into blocks of ``seq_length`` tokens (documents joined with EOS); every token carries loss."""
import os

import numpy as np

from mindkit.errors import InputError
from mindkit.registry import register
from mindkit.utils.paths import resolve_path


@register("dataset")
class TextDataLoader:
    def __init__(self, dataset_dir, shuffle=False, key="train_dataset.data_loader.dataset_dir", **ignored):
        dataset_dir = resolve_path(dataset_dir, key)
        if not dataset_dir or not os.path.isfile(dataset_dir) or not dataset_dir.endswith((".txt", ".npy")):
            raise InputError(key, dataset_dir, "an existing .txt file (one document per line) or .npy of token ids")
        self.path, self.shuffle, self.key = dataset_dir, shuffle, key

    def blocks(self, tokenizer, seq_length):
        if self.path.endswith(".npy"):
            ids = np.load(self.path).astype(np.int64).reshape(-1)
        else:
            eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
            with open(self.path, encoding="utf-8") as f:
                ids = np.array([t for line in f if line.strip()
                                for t in tokenizer.encode(line.strip(), add_special_tokens=False) + eos], np.int64)
        n = len(ids) // seq_length
        if n == 0:
            raise InputError(self.key, self.path, f"at least seq_length ({seq_length}) tokens",
                             hint=f"it holds {len(ids)}")
        blocks = ids[:n * seq_length].reshape(n, seq_length).astype(np.int32)
        return [{"input_ids": b, "labels": b.copy()} for b in blocks]
