"""`CausalLMConfig`: the ``model.model_config`` keys every MindFormers text model has besides its shape — batch and
sequence length, token ids, dtypes, KV cache and Ascend switches, pipeline ``offset``, and the generation defaults
MindFormers keeps here — with their checks. Model configs (``LlamaConfig``, ``ChatGLM2Config``) add their shape,
and a ``vocab_size`` (the width of the logits).

Accepted for compatibility but without effect in mindkit's plain-op models: ``use_flash_attention``, ``block_size``,
``num_blocks``, ``is_dynamic`` (Ascend kernel and paged-attention switches), ``checkpoint_name_or_path`` as a model
*name* (nothing is downloaded; a path works like ``load_checkpoint``).
"""
import dataclasses
from typing import Optional, Union

from mindkit.config.schema import Section, check_choice, check_positive, join_key
from mindkit.errors import ConfigError
from mindkit.generation.config import GenerationConfig

DTYPES = ("float32", "float16", "bfloat16")   # names; mindkit.models.layers maps them to MindSpore types


@dataclasses.dataclass
class CausalLMConfig(Section):
    batch_size: int = 1
    seq_length: int = 2048
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
    offset: Union[int, list] = 0             # MindFormers: per-pipeline-stage additions to the even layer split
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
        check_positive(self, "seq_length", "max_decode_length", "batch_size", "max_new_tokens")
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

    @property
    def eos_token_ids(self):
        eos = self.eos_token_id
        return [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]
