"""`GGUFTokenizer`: the GPT-2 style byte-level BPE stored in a GGUF file's metadata (SmolLM2 and friends).

Built with the `tokenizers` library: BPE over the GGUF vocab and merges, pre-tokenized by an individual-digit split
then ByteLevel (no prefix space, GPT-2 regex); CONTROL tokens are special. The chat template comes from the GGUF.
"""
from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

from mindkit.config.schema import warn_unused
from mindkit.errors import ConfigError
from mindkit.registry import register
from mindkit.tokenizers.base import Tokenizer
from mindkit.utils.gguf_file import metadata, open_gguf
from mindkit.utils.paths import require_file, resolve_path

CONTROL = 3


@register("tokenizer")
class GGUFTokenizer(Tokenizer):
    def __init__(self, vocab_file=None, chat_template=None, add_bos_token=None, **kwargs):
        warn_unused("processor.tokenizer", kwargs)
        key = "processor.tokenizer.vocab_file"
        self.vocab_file = require_file(resolve_path(vocab_file, key), key, "GGUF file")
        reader = open_gguf(self.vocab_file, key)
        model = metadata(reader, "tokenizer.ggml.model")
        if model != "gpt2":
            raise ConfigError(key, self.vocab_file, "a GGUF with a byte-level BPE tokenizer (tokenizer.ggml.model "
                              f"= gpt2), found {model!r}")
        tokens = metadata(reader, "tokenizer.ggml.tokens")
        merges = [tuple(m.split(" ", 1)) for m in metadata(reader, "tokenizer.ggml.merges")]
        types = metadata(reader, "tokenizer.ggml.token_type", [])
        self._tokens = tokens
        tok = HFTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tok.decoder = decoders.ByteLevel()
        self.special_ids = {i for i, t in enumerate(types) if t == CONTROL}
        tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in sorted(self.special_ids)])
        self.tok = tok
        self.bos_token_id = metadata(reader, "tokenizer.ggml.bos_token_id")
        self.eos_token_id = metadata(reader, "tokenizer.ggml.eos_token_id")
        self.pad_token_id = metadata(reader, "tokenizer.ggml.padding_token_id", self.eos_token_id)
        self.add_bos_token = (metadata(reader, "tokenizer.ggml.add_bos_token", False)
                              if add_bos_token is None else add_bos_token)
        self.chat_template = chat_template or metadata(reader, "tokenizer.chat_template")

    @property
    def vocab_size(self):
        return len(self._tokens)

    def encode(self, text, add_special_tokens=True):
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if add_special_tokens and self.add_bos_token and self.bos_token_id is not None:
            ids = [self.bos_token_id] + ids
        return ids

    def decode(self, ids, skip_special_tokens=True):
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id):
        return None if token_id is None else self._tokens[token_id]
