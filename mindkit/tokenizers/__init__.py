from mindkit.tokenizers.base import Tokenizer
from mindkit.tokenizers.gguf_tokenizer import GGUFTokenizer
from mindkit.tokenizers.llama_tokenizer import LlamaTokenizer

__all__ = ["Tokenizer", "GGUFTokenizer", "LlamaTokenizer"]
