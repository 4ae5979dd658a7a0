"""`LlamaConfig`: MindFormers' ``model.model_config`` keys for the Llama family (Llama 2, SmolLM2, ...); the keys
every model shares (token ids, dtypes, generation defaults...) are `CausalLMConfig`'s."""
import dataclasses
from typing import Optional

from mindkit.config.schema import check_positive, join_key
from mindkit.errors import ConfigError
from mindkit.models.model_config import CausalLMConfig
from mindkit.registry import register


@register("config")
@dataclasses.dataclass
class LlamaConfig(CausalLMConfig):
    hidden_size: int = 4096
    num_layers: int = 32
    num_heads: int = 32
    n_kv_heads: Optional[int] = None
    intermediate_size: Optional[int] = None
    vocab_size: int = 32000
    multiple_of: int = 256
    ffn_dim_multiplier: Optional[float] = None
    rms_norm_eps: float = 1e-5
    theta: float = 10000.0
    qkv_concat: bool = False
    quant_weight: Optional[str] = None       # "int8": projections and head int8 (mindkit.checkpoint.quantize)
    quant_group_size: int = 32               # int8: inputs per float32 scale and offset (quantize.GROUP_SIZE)
    tie_word_embeddings: bool = False

    def validate(self):
        k = self._key
        check_positive(self, "hidden_size", "num_layers", "num_heads", "vocab_size", "multiple_of", "n_kv_heads",
                       "intermediate_size")
        super().validate()
        if self.quant_weight not in (None, "int8"):
            raise ConfigError(join_key(k, "quant_weight"), self.quant_weight, "null or int8")
        group = self.quant_group_size
        if group < 8 or group % 8 or (self.quant_weight and (self.hidden_size % group or self.ffn_hidden_size % group)):
            raise ConfigError(join_key(k, "quant_group_size"), group,
                              f"a multiple of 8 that divides hidden_size ({self.hidden_size}) and the FFN width "
                              f"({self.ffn_hidden_size})")
        if self.hidden_size % self.num_heads:
            raise ConfigError(join_key(k, "hidden_size"), self.hidden_size, f"a multiple of num_heads ({self.num_heads})")
        if self.num_heads % self.kv_heads:
            raise ConfigError(join_key(k, "n_kv_heads"), self.n_kv_heads, f"a divisor of num_heads ({self.num_heads})")
        if self.theta <= 0:
            raise ConfigError(join_key(k, "theta"), self.theta, "a positive number")

    @property
    def kv_heads(self):
        return self.n_kv_heads or self.num_heads

    @property
    def head_dim(self):
        return self.hidden_size // self.num_heads

    @property
    def ffn_hidden_size(self):
        """MindFormers' rule: ``intermediate_size`` if set, else 4h → 2/3 → × multiplier → round up to multiple_of."""
        if self.intermediate_size:
            return self.intermediate_size
        h = int(2 * (4 * self.hidden_size) / 3)
        if self.ffn_dim_multiplier is not None:
            h = int(self.ffn_dim_multiplier * h)
        return self.multiple_of * ((h + self.multiple_of - 1) // self.multiple_of)
