"""`processor:` — a tokenizer plus how prompts become model input (chat template or plain text).

MindFormers names the class per model (``LlamaProcessor``, ``GLMProcessor``...); for text models they all do the
same, so one class answers to those names.
"""
from mindkit import registry
from mindkit.config.schema import warn_unused
from mindkit.errors import ConfigError, InputError
from mindkit.registry import register


@register("processor", "LlamaProcessor")
@register("processor", "GLMProcessor")
@register("processor", "TextProcessor")
class TextProcessor:
    def __init__(self, tokenizer=None, use_chat_template=False, system_prompt=None, return_tensors="ms", **kwargs):
        warn_unused("processor", kwargs)
        if isinstance(tokenizer, dict):
            tokenizer = registry.build("tokenizer", tokenizer, key="processor.tokenizer")
        if tokenizer is None:
            raise ConfigError("processor.tokenizer", None, "a tokenizer section with a 'type'")
        self.tokenizer, self.use_chat_template, self.system_prompt = tokenizer, use_chat_template, system_prompt

    def encode(self, prompts, seq_length=None, key="predict_data"):
        """Prompt strings → token-id lists; a prompt that leaves no room to generate is an InputError."""
        out = []
        for i, text in enumerate(prompts):
            if self.use_chat_template:
                messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + \
                           [{"role": "user", "content": text}]
                ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            else:
                ids = self.tokenizer.encode(text)
            if seq_length is not None and len(ids) >= seq_length:
                raise InputError(f"{key}[{i}]", f"{len(ids)} tokens",
                                 f"fewer than model.model_config.seq_length ({seq_length}) tokens")
            out.append(ids)
        return out
