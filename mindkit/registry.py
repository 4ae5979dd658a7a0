"""`type:` names → classes.

Every buildable thing (configs, models, tokenizers, processors, runners, datasets, metrics) registers under a
category; a YAML section ``{type: Name, **kwargs}`` builds ``Name(**kwargs)``. ``--register_path`` imports a user's
module so its own ``@register`` classes join the same table.
"""
import importlib.util
import inspect
import os
import sys

from mindkit.errors import ConfigError

CATEGORIES = ("config", "model", "tokenizer", "processor", "runner", "dataset", "metric", "trainer")
_TABLE = {c: {} for c in CATEGORIES}


def register(category, name=None):
    if category not in _TABLE:
        raise ValueError(f"unknown registry category {category!r}; expected one of {CATEGORIES}")

    def deco(cls):
        _TABLE[category][name or cls.__name__] = cls
        return cls

    return deco


def get(category, name, key="type"):
    _ensure_builtin()
    table = _TABLE[category]
    if name not in table:
        raise ConfigError(key, name, f"a registered {category} type: {', '.join(sorted(table)) or '(none)'}")
    return table[name]


def names(category):
    _ensure_builtin()
    return sorted(_TABLE[category])


def build(category, section, key=None, **defaults):
    """Build ``section['type']`` with the section's other keys (over ``defaults``) as constructor arguments."""
    key = key or category
    if not isinstance(section, dict) or "type" not in section:
        raise ConfigError(key, section, "a mapping with a 'type' key")
    cls = get(category, section["type"], f"{key}.type")
    kwargs = {**defaults, **{k: v for k, v in section.items() if k != "type"}}
    if hasattr(cls, "from_dict"):
        return cls.from_dict(kwargs, key=key)
    params = inspect.signature(cls).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}", kwargs[unknown[0]], f"one of the arguments of {cls.__name__}: "
                              f"{', '.join(params)}")
    return cls(**kwargs)


def load_register_path(path):
    """Import a user's module (a .py file or a folder holding Python files) so its registrations take effect."""
    if not path:
        return
    if not os.path.exists(path):
        raise ConfigError("register_path", path, "an existing .py file or folder")
    if os.path.isfile(path) and not path.endswith(".py"):
        raise ConfigError("register_path", path, "a .py file or a folder of them")
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(path, f) for f in os.listdir(path) if f.endswith(".py"))
    if os.path.isdir(path):
        sys.path.insert(0, os.path.abspath(path))
    for f in files:
        name = "mindkit_user_" + os.path.splitext(os.path.basename(f))[0]
        spec = importlib.util.spec_from_file_location(name, f)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's code: report it as theirs, in one line
            del sys.modules[name]
            raise ConfigError("register_path", f, "a module that imports cleanly",
                              hint=f"{type(e).__name__}: {e}") from None


_loaded = False


def _ensure_builtin():
    """Import the built-in modules whose classes register themselves (lazily, to keep start-up cheap)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import mindkit.models  # noqa: F401
    import mindkit.tokenizers  # noqa: F401
    import mindkit.runners  # noqa: F401
    import mindkit.data  # noqa: F401
    import mindkit.metrics  # noqa: F401
