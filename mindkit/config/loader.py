"""YAML files → one merged dict: ``base_config`` inheritance and command-line overrides.

Precedence (MindFormers'): YAML < explicit flags < ``--options k=v`` < free-form ``--a.b.c=v``.
"""
import contextlib
import copy
import json
import os
import re

import yaml

from mindkit.errors import ConfigError


def deep_merge(base, over):
    """Return ``base`` with ``over`` merged in; mappings merge key by key, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus floats written without a dot (``1e-5``, as MindFormers' configs write them), which
    YAML 1.1 leaves as strings (MindFormers converts them where it uses them)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def load_yaml(path, _seen=()):
    if not os.path.isfile(path):
        raise ConfigError("config", path, "an existing YAML file")
    real = os.path.realpath(path)
    if real in _seen:
        raise ConfigError("base_config", path, "no cycle of base_config files")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_Loader)
    except UnicodeDecodeError as e:
        raise ConfigError("config", path, "a UTF-8 YAML file", hint=f"byte {e.start} is not UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config {path}", None, None, hint=f"YAML syntax error at{where}: "
                          f"{getattr(e, 'problem', None) or e}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}", type(data).__name__, "a YAML mapping at the top level")
    bases = data.pop("base_config", None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"base_config ({path})", bases, "a path or a list of paths")
    merged = {}
    for base in bases:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        merged = deep_merge(merged, load_yaml(base_path, _seen + (real,)))
    return deep_merge(merged, data)


def parse_value(text):
    """Command-line value: int, float, True/False, None, JSON, then the string itself."""
    if not isinstance(text, str):
        return text
    for conv in (int, float):
        with contextlib.suppress(ValueError):
            return conv(text)
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def set_path(tree, dotted, value, create=False):
    """Set ``tree[a][b][c] = value`` for ``dotted = 'a.b.c'``. Intermediate keys must exist unless ``create``."""
    keys = dotted.split(".")
    node = tree
    for i, k in enumerate(keys[:-1]):
        if not isinstance(node.get(k), dict):
            if not create or (k in node and node[k] is not None):
                raise ConfigError(dotted, value, f"'{'.'.join(keys[:i + 1])}' to be an existing section of the config")
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def apply_options(tree, options, create):
    for item in options:
        if "=" not in item:
            raise ConfigError("options", item, "key.sub=value")
        k, v = item.split("=", 1)
        set_path(tree, k.lstrip("-"), parse_value(v), create=create)
    return tree
