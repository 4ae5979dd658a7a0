from mindkit.generation.config import GenerationConfig
from mindkit.generation.generate_loop import GenerateOutput, generate
from mindkit.generation.streamers import TextIteratorStreamer, TextStreamer

__all__ = ["GenerationConfig", "GenerateOutput", "generate", "TextIteratorStreamer", "TextStreamer"]
