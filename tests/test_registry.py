"""The registry: `type:` names build classes of every category; bad names and arguments are named errors."""
import pytest

from mindkit import registry
from mindkit.errors import ConfigError
from mindkit.registry import CATEGORIES, build, register


@pytest.mark.parametrize("category", ["config", "model", "tokenizer", "processor", "runner", "dataset", "metric"])
def test_every_category_builds_registered_classes(category):
    @register(category, name=f"Probe_{category}")
    class Probe:
        def __init__(self, size, scale=1.0):
            self.size, self.scale = size, scale

    obj = build(category, {"type": f"Probe_{category}", "size": 3}, scale=2.0)
    assert (obj.size, obj.scale) == (3, 2.0)
    assert f"Probe_{category}" in registry.names(category)


def test_builtin_names_are_registered():
    assert "LlamaConfig" in registry.names("config") and "LlamaForCausalLM" in registry.names("model")
    assert {"LlamaTokenizer", "GGUFTokenizer"} <= set(registry.names("tokenizer"))
    assert {"LlamaProcessor", "TextProcessor"} <= set(registry.names("processor"))
    assert "predict" in registry.names("runner")
    assert set(CATEGORIES) >= {"config", "model", "tokenizer", "processor", "runner", "dataset", "metric"}


def test_unknown_type_lists_known_names():
    with pytest.raises(ConfigError, match=r"model\.arch\.type: got 'GPT9'.*LlamaForCausalLM"):
        build("model", {"type": "GPT9"}, key="model.arch")


def test_unknown_argument_names_the_key():
    @register("metric", name="ProbeMetric")
    class ProbeMetric:
        def __init__(self, k=1):
            self.k = k

    with pytest.raises(ConfigError, match=r"metric\.kk: got 2"):
        build("metric", {"type": "ProbeMetric", "kk": 2}, key="metric")


def test_section_without_type_is_an_error():
    with pytest.raises(ConfigError, match="'type'"):
        build("processor", {"tokenizer": {}}, key="processor")


def test_processor_builds_its_tokenizer(tiny_sp_model):
    proc = build("processor", {"type": "LlamaProcessor", "return_tensors": "ms",
                               "tokenizer": {"type": "LlamaTokenizer", "vocab_file": tiny_sp_model}})
    ids = proc.encode(["the cat"])[0]
    assert ids[0] == 1 and proc.tokenizer.decode(ids) == "the cat"


def test_register_path_missing_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="register_path"):
        registry.load_register_path(str(tmp_path / "nope.py"))
