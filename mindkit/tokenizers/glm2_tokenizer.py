"""`ChatGLM2Tokenizer`: ChatGLM2's sentencepiece ``tokenizer.model`` plus five special tokens numbered after the
sentencepiece vocabulary — ``[MASK] [gMASK] [sMASK] sop eop`` — as MindFormers' and HuggingFace's ChatGLM2 tokenizers
number them. Encoding a prompt prepends [gMASK, sop]; EOS is sentencepiece's ``</s>``, padding its ``<unk>``.

Special-token strings in text stay text (GLM2's tokenizer does not parse them). The chat format is ChatGLM2's
``build_prompt``: ``[Round 1]\\n\\n问：{query}\\n\\n答：``, earlier rounds with their answers, here written as the
tokenizer's chat template so serving and ``use_chat_template`` use it too.
"""
from mindkit.registry import register
from mindkit.config.schema import warn_unused
from mindkit.tokenizers.base import Tokenizer
from mindkit.tokenizers.llama_tokenizer import load_sentencepiece

SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop")
PREFIX = ("[gMASK]", "sop")
CHAT_TEMPLATE = (
    "{% set ns = namespace(round=0) %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}{% set ns.round = ns.round + 1 %}[Round {{ ns.round }}]\n\n问：{{ m['content'] }}"
    "\n\n答：{% elif m['role'] == 'assistant' %}{{ m['content'] }}\n\n"
    "{% else %}{{ raise_exception('ChatGLM2 prompts hold user and assistant turns only, not ' + m['role']) }}"
    "{% endif %}{% endfor %}")


@register("tokenizer")
class ChatGLM2Tokenizer(Tokenizer):
    def __init__(self, vocab_file=None, chat_template=None, bos_token=None, eos_token=None, end_token=None,
                 mask_token=None, gmask_token=None, pad_token=None, unk_token=None, padding_side="left",
                 clean_up_tokenization_spaces=False, encode_special_tokens=False, **kwargs):
        # MindFormers' YAMLs pass GLM1-style token names (<sop>, <eop>, <pad>); GLM2's ids are fixed, as there
        warn_unused("processor.tokenizer", kwargs)
        self.vocab_file, self.sp = load_sentencepiece(vocab_file)
        n = self.sp.get_piece_size()
        self.special = {token: n + i for i, token in enumerate(SPECIAL_TOKENS)}
        self.special_names = {i: token for token, i in self.special.items()}
        self.bos_token_id, self.eos_token_id = self.sp.bos_id(), self.sp.eos_id()
        self.pad_token_id = self.unk_token_id = self.sp.unk_id()
        self.chat_template = chat_template or CHAT_TEMPLATE

    @property
    def vocab_size(self):
        return self.sp.get_piece_size() + len(SPECIAL_TOKENS)

    def prefix_tokens(self):
        return [self.special[t] for t in PREFIX]

    def encode(self, text, add_special_tokens=True):
        ids = self.sp.encode(text)
        return self.prefix_tokens() + ids if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens=True):
        """The specials are spelled out unless skipped; BOS, EOS and pad decode to nothing (as GLM2's own
        tokenizer); ids past the vocabulary (the model's padded rows) are dropped."""
        silent = {self.bos_token_id, self.eos_token_id, self.pad_token_id}
        text, run = [], []
        for i in (int(i) for i in ids):
            if i in self.special_names:
                if not skip_special_tokens:
                    text.append(self.sp.decode(run) + self.special_names[i])
                    run = []
            elif 0 <= i < self.sp.get_piece_size() and i not in silent:
                run.append(i)
        return "".join(text) + self.sp.decode(run)

    def id_to_token(self, token_id):
        if token_id is None or token_id < 0:
            return None
        return self.special_names.get(token_id) or self.sp.id_to_piece(token_id)

    def build_prompt(self, query, history=None):
        """ChatGLM2's prompt text for ``query`` after ``history`` [(query, answer), ...]."""
        messages = [{"role": role, "content": text} for q, a in history or [] for role, text in
                    (("user", q), ("assistant", a))]
        return self.render_chat(messages + [{"role": "user", "content": query}])

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        """The rendered rounds after the [gMASK, sop] prefix (the template writes no special tokens)."""
        text = self.render_chat(messages, add_generation_prompt)
        return self.encode(text) if tokenize else text
