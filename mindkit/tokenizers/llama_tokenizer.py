"""`LlamaTokenizer`: Llama-2 style sentencepiece ``tokenizer.model`` (``vocab_file``), BOS added by default.

Special-token strings in text (``<s>``, ``</s>``, control pieces — as chat templates write them) map to their ids
instead of being spelled out piece by piece.
"""
import re

import sentencepiece as spm

from mindkit.config.schema import warn_unused
from mindkit.errors import ConfigError
from mindkit.registry import register
from mindkit.tokenizers.base import Tokenizer
from mindkit.utils.paths import require_file, resolve_path


def load_sentencepiece(vocab_file, key="processor.tokenizer.vocab_file"):
    """(resolved path, SentencePieceProcessor) of a ``tokenizer.model``; a missing or unreadable file names ``key``."""
    path = require_file(resolve_path(vocab_file, key), key, "sentencepiece tokenizer.model file")
    try:
        return path, spm.SentencePieceProcessor(model_file=path)
    except (RuntimeError, OSError) as e:
        raise ConfigError(key, path, "a sentencepiece tokenizer.model file",
                          hint=str(e).splitlines()[0][:160]) from None


@register("tokenizer")
class LlamaTokenizer(Tokenizer):
    def __init__(self, vocab_file=None, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>",
                 add_bos_token=True, add_eos_token=False, chat_template=None, **kwargs):
        warn_unused("processor.tokenizer", kwargs)
        self.vocab_file, self.sp = load_sentencepiece(vocab_file)
        self.unk_token_id = self._piece_id(unk_token, self.sp.unk_id())
        self.bos_token_id = self._piece_id(bos_token, self.sp.bos_id())
        self.eos_token_id = self._piece_id(eos_token, self.sp.eos_id())
        self.pad_token_id = self._piece_id(pad_token, self.unk_token_id)
        self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token
        self.chat_template = chat_template
        self.special = {self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size())
                        if self.sp.is_control(i) or self.sp.is_unknown(i)}
        for tid in (self.bos_token_id, self.eos_token_id, self.unk_token_id, self.pad_token_id):
            if tid is not None and tid >= 0:
                self.special[self.sp.id_to_piece(tid)] = tid
        self.special_re = re.compile("(" + "|".join(map(re.escape, sorted(self.special, key=len, reverse=True)))
                                     + ")")

    def _piece_id(self, piece, fallback):
        if piece is None:
            return fallback
        pid = self.sp.piece_to_id(piece)
        return fallback if pid == self.sp.unk_id() and piece != self.sp.id_to_piece(self.sp.unk_id()) else pid

    @property
    def vocab_size(self):
        return self.sp.get_piece_size()

    def encode(self, text, add_special_tokens=True):
        ids = []
        for i, part in enumerate(self.special_re.split(text)):
            if i % 2:
                ids.append(self.special[part])
            elif part:
                ids.extend(self.sp.encode(part))
        if add_special_tokens:
            if self.add_bos_token and self.bos_token_id is not None and self.bos_token_id >= 0:
                ids = [self.bos_token_id] + ids
            if self.add_eos_token and self.eos_token_id is not None and self.eos_token_id >= 0:
                ids = ids + [self.eos_token_id]
        return ids

    def decode(self, ids, skip_special_tokens=True):
        size = self.sp.get_piece_size()
        ids = [int(i) for i in ids if 0 <= int(i) < size]  # a model's padded vocab may exceed the tokenizer's
        special = set(self.special.values())
        if skip_special_tokens:
            return self.sp.decode([i for i in ids if i not in special])
        text, run = [], []
        for i in ids:  # sentencepiece decodes control pieces to "": spell them out
            if i in special:
                text.append(self.sp.decode(run) + self.sp.id_to_piece(i))
                run = []
            else:
                run.append(i)
        return "".join(text) + self.sp.decode(run)

    def id_to_token(self, token_id):
        return None if token_id is None or token_id < 0 else self.sp.id_to_piece(token_id)
