from mindkit.tokenizers.base import Tokenizer
from mindkit.tokenizers.gguf_tokenizer import GGUFTokenizer
from mindkit.tokenizers.glm2_tokenizer import ChatGLM2Tokenizer
from mindkit.tokenizers.llama_tokenizer import LlamaTokenizer
from mindkit.tokenizers.processor import TextProcessor

__all__ = ["Tokenizer", "ChatGLM2Tokenizer", "GGUFTokenizer", "LlamaTokenizer", "TextProcessor"]
