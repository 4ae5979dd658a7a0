from mindkit.models.glm2 import ChatGLM2ForConditionalGeneration
from mindkit.models.glm2_config import ChatGLM2Config
from mindkit.models.llama import LlamaForCausalLM
from mindkit.models.llama_config import LlamaConfig

__all__ = ["ChatGLM2Config", "ChatGLM2ForConditionalGeneration", "LlamaConfig", "LlamaForCausalLM"]
