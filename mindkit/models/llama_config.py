"""`LlamaConfig`: MindFormers' ``model.model_config`` keys for the Llama family (Llama 2, SmolLM2, ...).

Accepted for compatibility but without effect in mindkit's plain-op model: ``use_flash_attention``, ``block_size``,
``num_blocks``, ``is_dynamic`` (Ascend kernel and paged-attention switches), ``checkpoint_name_or_path`` as a model
*name* (nothing is downloaded; a path works like ``load_checkpoint``).
"""
import dataclasses
from typing import Optional, Union

from mindkit.config.schema import Section, check_choice, check_positive, join_key
from mindkit.errors import ConfigError
from mindkit.generation.config import GenerationConfig
from mindkit.registry import register

DTYPES = ("float32", "float16", "bfloat16")   # names; mindkit.models.layers maps them to MindSpore types


@register("config")
@dataclasses.dataclass
class LlamaConfig(Section):
    batch_size: int = 1
    seq_length: int = 2048
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
    bos_token_id: Optional[int] = 1
    eos_token_id: Union[int, list, None] = 2
    pad_token_id: Optional[int] = 0
    ignore_token_id: int = -100
    compute_dtype: str = "float16"
    layernorm_compute_type: str = "float32"
    softmax_compute_type: str = "float32"
    rotary_dtype: str = "float32"
    param_init_type: str = "float16"
    use_past: bool = True                    # False: no KV cache, the whole sequence is recomputed each step
    use_flash_attention: bool = False
    block_size: int = 16
    num_blocks: int = 512
    is_dynamic: bool = False
    qkv_concat: bool = False
    quant_weight: Optional[str] = None       # "int8": projections and head int8, float32 scale per row
    offset: Union[int, list] = 0             # MindFormers: per-pipeline-stage additions to the even layer split
    tie_word_embeddings: bool = False
    checkpoint_name_or_path: Optional[str] = ""
    # generation defaults (MindFormers keeps them in model_config)
    max_decode_length: int = 512
    max_new_tokens: Optional[int] = None
    do_sample: bool = False
    top_k: int = 0
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.0

    def validate(self):
        k = self._key
        check_positive(self, "seq_length", "hidden_size", "num_layers", "num_heads", "vocab_size", "multiple_of",
                       "max_decode_length", "batch_size", "n_kv_heads", "intermediate_size", "max_new_tokens")
        try:  # the generation defaults kept here must make a valid GenerationConfig
            GenerationConfig.from_model_config(self)
        except ConfigError as e:
            raise ConfigError(join_key(k, e.key), e.value, e.expected) from None
        if not all(isinstance(e, int) and not isinstance(e, bool) and 0 <= e < self.vocab_size
                   for e in self.eos_token_ids):
            raise ConfigError(join_key(k, "eos_token_id"), self.eos_token_id,
                              f"token ids in [0, vocab_size={self.vocab_size})")
        for name in ("compute_dtype", "layernorm_compute_type", "softmax_compute_type", "rotary_dtype",
                     "param_init_type"):
            check_choice(join_key(k, name), getattr(self, name), DTYPES)
        if self.quant_weight not in (None, "int8"):
            raise ConfigError(join_key(k, "quant_weight"), self.quant_weight, "null or int8")
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

    @property
    def eos_token_ids(self):
        eos = self.eos_token_id
        return [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]
