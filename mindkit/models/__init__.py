from mindkit.models.llama import LlamaForCausalLM
from mindkit.models.llama_config import LlamaConfig

__all__ = ["LlamaConfig", "LlamaForCausalLM"]
