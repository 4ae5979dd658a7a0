"""MindFormers' Auto classes: a model name, a YAML, or a folder holding a YAML → the model's config, the model with
its weights, or its tokenizer.

Names are the shipped ``configs/*/predict_<name>.yaml`` (``smollm2_135m``, ``llama2_7b``...), found by listing the
folder, so a model whose config lands there is a name at once. Nothing is ever downloaded: weights or a tokenizer
file that are not here stop the call before anything is built, naming the key to set and the file it expects.
"""
import copy
import dataclasses
import glob
import inspect
import os

from mindkit.config.loader import load_yaml, set_path
from mindkit.config.schema import Section
from mindkit.config.sections import MindkitConfig
from mindkit.errors import ConfigError
from mindkit.utils.paths import PROJECT, resolve_path

CONFIGS = os.path.join(PROJECT, "configs")
# file keys a folder's YAML may give relative to the folder
FILE_KEYS = ("load_checkpoint", "model.model_config.checkpoint_name_or_path", "processor.tokenizer.vocab_file")
TOP_KEYS = {f.name for f in dataclasses.fields(MindkitConfig)}


def model_names():
    """{name: YAML path} for every ``configs/*/predict_<name>.yaml``."""
    paths = sorted(glob.glob(os.path.join(CONFIGS, "*", "predict_*.yaml")))
    return {os.path.basename(p)[len("predict_"):-len(".yaml")]: p for p in paths}


def find_yaml(name_or_path):
    """The YAML file ``name_or_path`` stands for, and the folder its relative file paths are relative to (a
    folder argument) or None. Relative paths: the current directory first, then this project (as --config)."""
    path = resolve_path(name_or_path, "yaml_name_or_path")
    if os.path.isfile(path):
        return path, None
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "*.yaml")) + glob.glob(os.path.join(path, "*.yml")))
        predict = [p for p in found if os.path.basename(p).startswith("predict_")]
        if len(found) == 1 or len(predict) == 1:
            return (predict or found)[0], path
        raise ConfigError("yaml_name_or_path", name_or_path, "a folder holding one YAML config (or one predict_*.yaml)",
                          hint=f"found {len(found)}: {', '.join(os.path.basename(p) for p in found) or 'none'}")
    names = model_names()
    if name_or_path in names:
        return names[name_or_path], None
    raise ConfigError("yaml_name_or_path", name_or_path,
                      f"a YAML file, a folder holding one, or a model name: {', '.join(names)}")


def _get(tree, dotted):
    for k in dotted.split("."):
        tree = tree.get(k) if isinstance(tree, dict) else None
    return tree


def _override_key(key):
    """MindFormers' ``from_pretrained(name, **kwargs)`` keys are ``model_config`` keys; top-level keys
    (``load_checkpoint``) and dotted paths (``processor.tokenizer.vocab_file``) also work."""
    return key if "." in key or key in TOP_KEYS else f"model.model_config.{key}"


def load_config(config, overrides=None):
    """A MindkitConfig from a model name, a YAML path, a folder holding a YAML, a dict of YAML keys, or a
    MindkitConfig (as it is). ``overrides``: ``{key: value}`` as ``from_pretrained`` takes them."""
    if isinstance(config, MindkitConfig):
        if overrides:
            raise TypeError("overrides apply to a name, a YAML path or a dict, not to a built MindkitConfig")
        return config
    source = None
    if isinstance(config, str):
        source, folder = find_yaml(config)
        tree = load_yaml(source)
        for key in FILE_KEYS if folder else ():
            value = _get(tree, key)
            if isinstance(value, str) and value and not os.path.isabs(value) and "://" not in value \
                    and os.path.exists(os.path.join(folder, value)):
                set_path(tree, key, os.path.join(folder, value))
    elif isinstance(config, dict):
        tree = copy.deepcopy(config)
    else:
        raise ConfigError("config", type(config).__name__, "a model name, a YAML path or folder, a dict or a "
                          "MindkitConfig")
    for key, value in (overrides or {}).items():
        set_path(tree, _override_key(key), value, create=True)
    run = MindkitConfig.from_dict(tree)
    run.source = source  # where a missing file should be set (error messages)
    return run


def where_to_set(config, key):
    source = getattr(config, "source", None)
    arg = f"{key}=..." if "." not in key else f"**{{'{key}': ...}}"
    return f"nothing is downloaded: set {key} in {source or 'the config'}, or pass from_pretrained(..., {arg})"


def require_file(config, key, path, what):
    """``path`` (already resolved) must exist; else an error naming ``key``, the path and where to set it."""
    if not path or not os.path.exists(path):
        raise ConfigError(key, path or "", f"an existing {what}", hint=where_to_set(config, key))
    return path


def require_weights(config):
    from mindkit.runners.build import build_model_config
    model_config = build_model_config(config)
    value = config.load_checkpoint or getattr(model_config, "checkpoint_name_or_path", None)
    key = "model.model_config.checkpoint_name_or_path" if value and not config.load_checkpoint else "load_checkpoint"
    require_file(config, key, resolve_path(value, key), "checkpoint file or folder (.ckpt, .safetensors or .gguf)")


def require_tokenizer_file(config):
    key = "processor.tokenizer.vocab_file"
    tokenizer = config.section("processor").get("tokenizer")
    if isinstance(tokenizer, dict) and "vocab_file" in tokenizer:
        require_file(config, key, resolve_path(tokenizer["vocab_file"], key), f"file for {tokenizer.get('type')}")


def model_config_tree(model_config):
    """The YAML tree of a run whose model is ``model_config`` (a typed config such as LlamaConfig), its
    ``arch.type`` the registered model whose constructor takes that config class."""
    from mindkit import registry
    archs = [name for name in registry.names("model")
             if getattr(registry.get("model", name), "config_class", None) is type(model_config)
             or _config_annotation(registry.get("model", name)) in (type(model_config), type(model_config).__name__)]
    if not archs:
        raise ConfigError("model.arch.type", None, f"a registered model taking a {type(model_config).__name__}",
                          hint="pass a YAML (model.arch.type names the model) instead of a bare config")
    section = {"type": type(model_config).__name__, **model_config.to_dict()}
    return {"model": {"model_config": section, "arch": {"type": archs[0]}}}


def _config_annotation(cls):
    param = inspect.signature(cls.__init__).parameters.get("config")
    return None if param is None else param.annotation


def build(config, load, seed=True):
    """The model of a MindkitConfig on this process' device; weights from the config when ``load``, else
    random. ``context.mode: 0`` makes ``generate`` run compiled steps."""
    from mindkit.runners.build import build_model, setup_context
    if load:
        require_weights(config)
    setup_context(config, seed=seed)
    model = build_model(config, load=load, random_init=not load)
    model.compiled_generate = config.context.mode == 0
    return model


class AutoConfig:
    @classmethod
    def from_pretrained(cls, yaml_name_or_path, **kwargs):
        """The typed ``model.model_config`` (e.g. LlamaConfig) of a name, YAML or folder; ``kwargs`` override it."""
        from mindkit.runners.build import build_model_config
        return build_model_config(load_config(yaml_name_or_path, kwargs))


class AutoModel:
    @classmethod
    def from_pretrained(cls, yaml_name_or_path, **kwargs):
        """The model with its weights (``load_checkpoint``, or ``model_config.checkpoint_name_or_path``)."""
        return build(load_config(yaml_name_or_path, kwargs), load=True)

    @classmethod
    def from_config(cls, config, **kwargs):
        """A typed model config (AutoConfig's), or anything ``from_pretrained`` takes: random weights unless the
        config names a checkpoint (then it is loaded, as MindFormers does)."""
        bare = isinstance(config, Section) and not isinstance(config, MindkitConfig)
        run = load_config(model_config_tree(config) if bare else config, kwargs)
        named = run.load_checkpoint or run.model.get("model_config", {}).get("checkpoint_name_or_path")
        return build(run, load=bool(named), seed=not bare)  # a bare config keeps the caller's random seed


AutoModelForCausalLM = AutoModel


class AutoTokenizer:
    @classmethod
    def from_pretrained(cls, yaml_name_or_path, **kwargs):
        """The ``processor.tokenizer`` of a name, YAML or folder."""
        from mindkit.runners.build import build_processor
        config = load_config(yaml_name_or_path, kwargs)
        require_tokenizer_file(config)
        return build_processor(config).tokenizer
