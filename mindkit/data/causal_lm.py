"""Plain causal-LM data for continued training (``run_mode: train``; MindFormers' task name
``CausalLanguageModelDataset``): text or token ids packed into blocks of ``seq_length`` tokens, every token carrying
loss (``labels`` = ``input_ids``; the loss shifts inside).

``data_loader: {type: TextDataLoader, dataset_dir, shuffle, document_per_line, token_dtype}``:
  .txt   one document per non-blank line (``document_per_line: False``: the whole file is one document); each is
         encoded with the tokenizer's specials (BOS for Llama) and followed by EOS
  .npy   an array of token ids (any shape, read flat)
  .bin   raw little-endian token ids of ``token_dtype`` (default int32; uint16 for nanoGPT-style files)
The tokens after the last whole block are dropped (logged).
"""
import logging
import os

import numpy as np

from mindkit.data.pipeline_keys import warn_unknown
from mindkit.errors import ConfigError, InputError
from mindkit.registry import register
from mindkit.utils.paths import resolve_path

logger = logging.getLogger("mindkit")

SUFFIXES = (".txt", ".npy", ".bin")
TOKEN_DTYPES = ("int32", "uint16", "int64", "uint32")


@register("dataset")
class TextDataLoader:
    def __init__(self, dataset_dir=None, shuffle=False, document_per_line=True, token_dtype="int32",
                 key="train_dataset.data_loader", **kwargs):
        warn_unknown(key, kwargs)
        path = resolve_path(dataset_dir, f"{key}.dataset_dir")
        if not path or not os.path.isfile(path) or not path.endswith(SUFFIXES):
            raise InputError(f"{key}.dataset_dir", path, "an existing .txt file (one document per line), .npy or "
                                                         ".bin file of token ids")
        if token_dtype not in TOKEN_DTYPES:
            raise ConfigError(f"{key}.token_dtype", token_dtype, "one of " + ", ".join(TOKEN_DTYPES))
        self.path, self.shuffle, self.key = path, bool(shuffle), key
        self.document_per_line, self.token_dtype = bool(document_per_line), token_dtype

    def tokens(self, tokenizer):
        """All token ids of the file, flat, int64."""
        if self.path.endswith(".txt"):
            ids = self._encode_text(tokenizer)
        elif self.path.endswith(".npy"):
            ids = np.load(self.path, allow_pickle=False).reshape(-1)
        else:
            ids = self._read_bin()
        if not np.issubdtype(ids.dtype, np.integer) or (ids.size and ids.min() < 0):
            raise InputError(f"{self.key}.dataset_dir", self.path, "non-negative integer token ids")
        return ids.astype(np.int64)

    def _encode_text(self, tokenizer):
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise InputError(f"{self.key}.dataset_dir", self.path, "a UTF-8 text file",
                             hint=f"byte {e.start} is not UTF-8") from None
        docs = [d for d in (text.splitlines() if self.document_per_line else [text]) if d.strip()]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        return np.array([t for d in docs for t in tokenizer.encode(d.strip()) + eos], np.int64)

    def _read_bin(self):
        size, item = os.path.getsize(self.path), np.dtype(self.token_dtype).itemsize
        if size % item:
            raise InputError(f"{self.key}.dataset_dir", self.path, f"a whole number of {self.token_dtype} ids",
                             hint=f"{size} bytes; set {self.key}.token_dtype")
        return np.fromfile(self.path, dtype=np.dtype(self.token_dtype).newbyteorder("<"))


def pack_blocks(ids, seq_length, key, path):
    """Token ids → training items of ``seq_length`` tokens (input_ids, labels, attention_mask; int32)."""
    n = len(ids) // seq_length
    if n == 0:
        raise InputError(key, path, f"at least model.model_config.seq_length ({seq_length}) tokens",
                         hint=f"it holds {len(ids)}")
    if len(ids) % seq_length:
        logger.info("%s: %d blocks of %d tokens; the last %d tokens are not used", path, n, seq_length,
                    len(ids) % seq_length)
    blocks = np.asarray(ids[:n * seq_length], np.int32).reshape(n, seq_length)
    ones = np.ones(seq_length, np.int32)
    return [{"input_ids": b, "labels": b.copy(), "attention_mask": ones.copy()} for b in blocks]
