"""`LlamaTokenizer`: Llama-2 style sentencepiece ``tokenizer.model`` (``vocab_file``), BOS added by default."""
import sentencepiece as spm

from mindkit.registry import register
from mindkit.tokenizers.base import Tokenizer
from mindkit.utils.paths import require_file, resolve_path


@register("tokenizer")
class LlamaTokenizer(Tokenizer):
    def __init__(self, vocab_file=None, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>",
                 add_bos_token=True, add_eos_token=False, chat_template=None, **kwargs):
        key = "processor.tokenizer.vocab_file"
        self.vocab_file = require_file(resolve_path(vocab_file, key), key, "sentencepiece tokenizer.model file")
        self.sp = spm.SentencePieceProcessor(model_file=self.vocab_file)
        self.unk_token_id = self._piece_id(unk_token, self.sp.unk_id())
        self.bos_token_id = self._piece_id(bos_token, self.sp.bos_id())
        self.eos_token_id = self._piece_id(eos_token, self.sp.eos_id())
        self.pad_token_id = self._piece_id(pad_token, self.unk_token_id)
        self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token
        self.chat_template = chat_template

    def _piece_id(self, piece, fallback):
        if piece is None:
            return fallback
        pid = self.sp.piece_to_id(piece)
        return fallback if pid == self.sp.unk_id() and piece != self.sp.id_to_piece(self.sp.unk_id()) else pid

    @property
    def vocab_size(self):
        return self.sp.get_piece_size()

    def encode(self, text, add_special_tokens=True):
        ids = self.sp.encode(text)
        if add_special_tokens:
            if self.add_bos_token and self.bos_token_id is not None and self.bos_token_id >= 0:
                ids = [self.bos_token_id] + ids
            if self.add_eos_token and self.eos_token_id is not None and self.eos_token_id >= 0:
                ids = ids + [self.eos_token_id]
        return ids

    def decode(self, ids, skip_special_tokens=True):
        size = self.sp.get_piece_size()
        ids = [int(i) for i in ids if 0 <= int(i) < size]  # a model's padded vocab may exceed the tokenizer's
        if skip_special_tokens:
            special = {self.bos_token_id, self.eos_token_id, self.pad_token_id}
            ids = [i for i in ids if i not in special and not self.sp.is_control(i)]
        return self.sp.decode(ids)

    def id_to_token(self, token_id):
        return None if token_id is None or token_id < 0 else self.sp.id_to_piece(token_id)
