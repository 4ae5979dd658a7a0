"""`ChatGLM2Config`: MindFormers' ``model.model_config`` keys for ChatGLM2 (and ChatGLM3, CodeGeeX2: same network).

Accepted as MindFormers writes them but without effect here: ``hidden_dropout``, ``attention_dropout`` (inference and
LoRA finetunes run without dropout), ``bias_dropout_fusion``, ``apply_query_key_layer_scaling`` and
``attention_softmax_in_fp32`` (the same scores either way; softmax runs in ``softmax_compute_type``),
``fp32_residual_connection``, ``pp_interleave_num``, ``gmask_token_id``. Network variants mindkit does not build
(LayerNorm instead of RMSNorm, post-layernorm residuals, no final norm, quantization, p-tuning prefixes) are refused
by key rather than run wrongly.
"""
import dataclasses
from typing import Optional, Union

from mindkit.config.schema import check_positive, join_key
from mindkit.errors import ConfigError
from mindkit.models.model_config import CausalLMConfig
from mindkit.registry import register


@register("config")
@dataclasses.dataclass
class ChatGLM2Config(CausalLMConfig):
    num_layers: int = 28
    padded_vocab_size: int = 65024
    hidden_size: int = 4096
    ffn_hidden_size: int = 13696
    kv_channels: int = 128                   # the head dimension
    num_attention_heads: int = 32
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    layernorm_epsilon: float = 1e-5
    rope_ratio: float = 1.0                  # RoPE base = 10000 * rope_ratio
    rmsnorm: bool = True
    apply_residual_connection_post_layernorm: bool = False
    post_layer_norm: bool = True
    add_bias_linear: bool = False
    add_qkv_bias: bool = True
    bias_dropout_fusion: bool = True
    multi_query_attention: bool = True
    multi_query_group_num: int = 2
    apply_query_key_layer_scaling: bool = True
    attention_softmax_in_fp32: bool = True
    fp32_residual_connection: bool = False
    quantization_bit: int = 0
    pre_seq_len: Union[int, str, None] = None   # MindFormers' YAMLs write the string None
    prefix_projection: bool = False
    gmask_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    use_past: bool = False
    num_blocks: int = 128
    pp_interleave_num: int = 1

    def validate(self):
        k = self._key
        check_positive(self, "num_layers", "padded_vocab_size", "hidden_size", "ffn_hidden_size", "kv_channels",
                       "num_attention_heads", "multi_query_group_num")
        super().validate()
        if self.kv_channels % 4:  # the rotated half of each head turns in pairs
            raise ConfigError(join_key(k, "kv_channels"), self.kv_channels, "a multiple of 4")
        if self.num_attention_heads % self.kv_groups:
            raise ConfigError(join_key(k, "multi_query_group_num"), self.multi_query_group_num,
                              f"a divisor of num_attention_heads ({self.num_attention_heads})")
        if self.rope_ratio <= 0:
            raise ConfigError(join_key(k, "rope_ratio"), self.rope_ratio, "a positive number")
        for name, built in (("rmsnorm", True), ("apply_residual_connection_post_layernorm", False),
                            ("post_layer_norm", True), ("quantization_bit", 0), ("prefix_projection", False)):
            if getattr(self, name) != built:
                raise ConfigError(join_key(k, name), getattr(self, name), f"{built} (the variant mindkit builds)")
        if self.pre_seq_len not in (None, "None", 0):
            raise ConfigError(join_key(k, "pre_seq_len"), self.pre_seq_len, "None (p-tuning v2 is not built)")

    @property
    def vocab_size(self):   # MindFormers' ChatGLM2Config sets vocab_size = padded_vocab_size too
        return self.padded_vocab_size

    @property
    def num_heads(self):
        return self.num_attention_heads

    @property
    def kv_groups(self):
        """KV heads: ``multi_query_group_num`` with multi-query attention, else one per query head."""
        return self.multi_query_group_num if self.multi_query_attention else self.num_attention_heads

    kv_heads = kv_groups
