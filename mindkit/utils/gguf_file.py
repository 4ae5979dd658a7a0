"""One parsed GGUF file shared by the weight loader and the tokenizer (parsing costs ~4 s for SmolLM2)."""
import functools
import os

import numpy as np

from mindkit.errors import ConfigError


@functools.lru_cache(maxsize=2)
def _reader(path, mtime):
    from gguf import GGUFReader
    return GGUFReader(path)


def open_gguf(path, key):
    try:
        return _reader(os.path.realpath(path), os.path.getmtime(path))
    except (ValueError, OSError, KeyError, IndexError) as e:
        raise ConfigError(key, path, "a readable GGUF file", hint=str(e).splitlines()[0][:160]) from None


def metadata(reader, key, default=None):
    """A metadata value as Python: scalars, strings, lists of strings or numbers."""
    field = reader.fields.get(key)
    if field is None:
        return default
    from gguf import GGUFValueType
    if field.types[0] == GGUFValueType.ARRAY:
        if field.types[-1] == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        return np.concatenate([field.parts[i] for i in field.data]).tolist() if field.data else []
    if field.types[0] == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return field.parts[field.data[0]].tolist()[0]
