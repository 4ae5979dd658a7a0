"""`GenerationConfig`: how long and how to pick tokens. Defaults come from ``model.model_config`` (MindFormers
keeps them there); call arguments override."""
import dataclasses
from typing import Optional

from mindkit.errors import ConfigError


@dataclasses.dataclass
class GenerationConfig:
    max_length: Optional[int] = None        # prompt + generated; MindFormers' max_decode_length
    max_new_tokens: Optional[int] = None    # wins over max_length when set
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    eos_token_id: tuple = ()
    pad_token_id: int = 0
    seed: Optional[int] = None

    def __post_init__(self):
        if isinstance(self.eos_token_id, int):
            self.eos_token_id = (self.eos_token_id,)
        self.eos_token_id = tuple(self.eos_token_id or ())
        if not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in self.eos_token_id):
            raise ConfigError("eos_token_id", self.eos_token_id, "token ids (ints >= 0)")
        if self.temperature <= 0 and self.do_sample:
            raise ConfigError("temperature", self.temperature, "a number > 0 when do_sample is True")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", self.top_p, "a number in (0, 1]")
        if self.top_k < 0:
            raise ConfigError("top_k", self.top_k, "an int >= 0 (0 = off)")
        if self.repetition_penalty <= 0:
            raise ConfigError("repetition_penalty", self.repetition_penalty, "a number > 0 (1.0 = off)")
        for name in ("max_length", "max_new_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, value, "an int >= 1")

    @classmethod
    def from_model_config(cls, cfg, **overrides):
        base = dict(max_length=cfg.max_decode_length, max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                    temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                    repetition_penalty=cfg.repetition_penalty, eos_token_id=tuple(cfg.eos_token_ids),
                    pad_token_id=cfg.pad_token_id if cfg.pad_token_id is not None else 0)
        return cls(**base).updated(**overrides)

    def updated(self, **overrides):
        """A copy with the ``overrides`` that are not None. A ``max_length`` given without ``max_new_tokens`` also
        drops an inherited ``max_new_tokens`` (else the config's would silently win over the limit asked for);
        both given: ``max_new_tokens`` wins, as in HF/MindFormers."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "max_length" in overrides and "max_new_tokens" not in overrides:
            overrides["max_new_tokens"] = None
        return dataclasses.replace(self, **overrides)

    def new_tokens_for(self, prompt_len, seq_length):
        """How many tokens to generate for the longest prompt, within the model's ``seq_length``."""
        if self.max_new_tokens is not None:
            wanted = self.max_new_tokens
        else:
            wanted = (self.max_length or seq_length) - prompt_len
        return max(0, min(wanted, seq_length - prompt_len))
