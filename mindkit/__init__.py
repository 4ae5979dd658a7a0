"""mindkit: declarative, YAML-driven large-model pipelines on MindSpore, compatible with MindFormers configs.

``from mindkit import AutoModel, pipeline, ...`` loads the Python API (and MindSpore) on first use only, so
``import mindkit`` (the CLI's first step) stays cheap.
"""
__version__ = "0.1.0"

_API = ("AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoTokenizer", "TextIteratorStreamer", "TextStreamer",
        "Trainer", "pipeline")
__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        from mindkit import api
        return getattr(api, name)
    raise AttributeError(f"module 'mindkit' has no attribute {name!r}")
