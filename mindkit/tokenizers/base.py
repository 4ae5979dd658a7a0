"""What every tokenizer offers the rest of mindkit: text ↔ ids, special ids, and the chat template."""
import abc

import jinja2

from mindkit.errors import ConfigError, InputError


class Tokenizer(abc.ABC):
    bos_token_id = None
    eos_token_id = None
    pad_token_id = None
    add_bos_token = False
    chat_template = None

    @abc.abstractmethod
    def encode(self, text, add_special_tokens=True):
        """Text -> token ids (with BOS/EOS as the tokenizer adds them, unless ``add_special_tokens`` is False)."""

    @abc.abstractmethod
    def decode(self, ids, skip_special_tokens=True):
        """Token ids -> text."""

    @property
    @abc.abstractmethod
    def vocab_size(self):
        """Number of token ids."""

    def __call__(self, text, add_special_tokens=True):
        if isinstance(text, str):
            return {"input_ids": self.encode(text, add_special_tokens)}
        return {"input_ids": [self.encode(t, add_special_tokens) for t in text]}

    def batch_decode(self, batch, skip_special_tokens=True):
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    def render_chat(self, messages, add_generation_prompt=True):
        if not self.chat_template:
            raise ConfigError("processor.tokenizer.chat_template", None, "a Jinja chat template for this tokenizer")
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
        env.globals["raise_exception"] = _raise
        try:
            template = env.from_string(self.chat_template)
        except jinja2.TemplateSyntaxError as e:
            raise ConfigError("processor.tokenizer.chat_template", None, "a valid Jinja template",
                              hint=f"line {e.lineno}: {e.message}") from None
        try:
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   bos_token=self.id_to_token(self.bos_token_id),
                                   eos_token=self.id_to_token(self.eos_token_id))
        except jinja2.TemplateError as e:
            raise InputError("chat messages", None, None, hint=f"the chat template refused them: {e}") from None

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        """Render ``messages`` ([{role, content}]) with the model's template; ids unless ``tokenize=False``.
        The template writes its own special tokens, so none are added on top."""
        text = self.render_chat(messages, add_generation_prompt)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def id_to_token(self, token_id):
        return None


def _raise(message):
    raise jinja2.TemplateError(message)
