"""PyTorch state dicts (.pth/.bin/.pt) read without torch, so importing a HuggingFace checkpoint needs no 2 GB
dependency and runs no pickled code.

``torch.save`` (torch >= 1.6) writes a zip: ``<root>/data.pkl`` pickles the dict, each tensor as
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` whose storage is a persistent id
``('storage', torch.<Type>Storage, key, location, numel)`` naming the raw little-endian bytes ``<root>/data/<key>``.
The unpickler below builds exactly those objects (and ``OrderedDict``); any other pickled global is refused.
"""
import collections
import pickle
import zipfile

import numpy as np

from mindkit.errors import CheckpointError

# torch storage type → (numpy dtype of the stored bytes, dtype name); bfloat16 is stored as its 16 raw bits
STORAGES = {"FloatStorage": ("<f4", "float32"), "HalfStorage": ("<f2", "float16"),
            "BFloat16Storage": ("<u2", "bfloat16"), "DoubleStorage": ("<f8", "float64"),
            "LongStorage": ("<i8", "int64"), "IntStorage": ("<i4", "int32"), "ShortStorage": ("<i2", "int16"),
            "CharStorage": ("i1", "int8"), "ByteStorage": ("u1", "uint8"), "BoolStorage": ("?", "bool")}


def bf16_to_float32(bits):
    """bfloat16 bit patterns (uint16) → float32, exactly."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(x):
    """float32 → bfloat16 bit patterns (uint16), rounding to nearest even as torch and MindSpore do; NaN stays NaN."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    return np.where(np.isnan(x), (bits >> 16) | 0x40, rounded).astype(np.uint16)


class _Storage:
    def __init__(self, type_name, key):
        self.type_name, self.key = type_name, key


class _Tensor:
    """What ``_rebuild_tensor_v2`` describes; turned into an array once the pickle is read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor(storage, offset, size, stride, *_):
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *_):
    return data


class _StorageType:
    def __init__(self, name):
        self.name = name


_GLOBALS = {("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        if (module, name) in _GLOBALS:
            return _GLOBALS[module, name]
        if module == "torch" and name in STORAGES:
            return _StorageType(name)
        expected = ("tensors of " + ", ".join(v[1] for v in STORAGES.values())) if name.endswith("Storage") else \
            "only tensors, dicts and plain values in a state dict"
        raise CheckpointError(f"{self.path}: pickled {module}.{name}", "an object mindkit does not read",
                              expected, hint="re-save the plain state dict: torch.save(model.state_dict(), path)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and
                isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"{self.path}: persistent id {str(pid)[:80]}", "an unknown storage reference",
                                  "('storage', torch.<Type>Storage, key, location, numel)")
        return _Storage(pid[1].name, str(pid[2]))


def _root(z, path):
    pkls = [n for n in z.namelist() if n.endswith("data.pkl")]
    if len(pkls) != 1:
        raise CheckpointError("--input", path, "a torch.save zip archive with one data.pkl",
                              hint=f"found {len(pkls)} data.pkl entries")
    root = pkls[0][: -len("data.pkl")]
    if root + "byteorder" in z.namelist() and z.read(root + "byteorder").strip() != b"little":
        raise CheckpointError(f"{path}: byteorder", z.read(root + "byteorder").decode(errors="replace"), "little")
    return root


class _Storages:
    """Raw storages of the archive, each read once (tensors such as tied weights may share one)."""

    def __init__(self, z, root, path):
        self.z, self.root, self.path, self.cache = z, root, path, {}

    def get(self, storage):
        if storage.key not in self.cache:
            entry = f"{self.root}data/{storage.key}"
            try:
                raw = self.z.read(entry)
            except KeyError:
                raise CheckpointError(f"{self.path}: {entry}", "missing", "the storage a tensor refers to") from None
            np_dtype = np.dtype(STORAGES[storage.type_name][0])
            if len(raw) % np_dtype.itemsize:
                raise CheckpointError(f"{self.path}: {entry}", f"{len(raw)} bytes",
                                      f"a whole number of {np_dtype.itemsize}-byte elements")
            self.cache[storage.key] = np.frombuffer(raw, np_dtype)
        return self.cache[storage.key]


def _materialize(name, t, storages, path):
    flat = storages.get(t.storage)
    if any(n < 0 for n in t.size) or any(s < 0 for s in t.stride) or len(t.size) != len(t.stride):
        raise CheckpointError(f"{path}: tensor {name}", f"size {t.size} stride {t.stride}",
                              "non-negative sizes and strides of equal length")
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride)) if all(t.size) else t.offset - 1
    if t.offset < 0 or last >= len(flat):
        raise CheckpointError(f"{path}: tensor {name}", f"elements up to {last} (offset {t.offset})",
                              f"within its storage of {len(flat)} elements")
    view = np.lib.stride_tricks.as_strided(flat[t.offset:], t.size, [s * flat.itemsize for s in t.stride])
    value = np.array(view, order="C")  # a contiguous copy, no longer tied to the archive's bytes
    type_name = STORAGES[t.storage.type_name][1]
    return (bf16_to_float32(value) if type_name == "bfloat16" else value), type_name


def _state_dict(obj, path):
    for key in ("state_dict", "model", "module"):  # training checkpoints wrap the weights
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError("--input", path, "a PyTorch state dict (a dict of name -> tensor)",
                              hint=f"the file holds a {type(obj).__name__}")
    others = [k for k, v in obj.items() if not isinstance(v, _Tensor)]
    if others:
        raise CheckpointError(f"{path}: entry {others[0]!r}", type(obj[others[0]]).__name__, "a tensor",
                              hint=f"{len(others)} non-tensor entries in all" if len(others) > 1 else None)
    return obj


def read_torch_state(path):
    """(name → numpy array, name → dtype name) of a ``torch.save`` state dict; bfloat16 is widened to float32
    exactly and reported as ``'bfloat16'``."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError("--input", path, "a PyTorch zip archive (torch.save of torch >= 1.6)",
                              hint="legacy files: re-save with torch.save(state_dict, path) in a recent torch")
    with zipfile.ZipFile(path) as z:
        root = _root(z, path)
        with z.open(root + "data.pkl") as f:
            try:
                obj = _Unpickler(f, path).load()
            except (pickle.UnpicklingError, EOFError, TypeError, AttributeError) as e:
                raise CheckpointError(f"{path}: data.pkl", f"{type(e).__name__}: {str(e)[:120]}",
                                      "a pickled state dict") from None
        tensors = _state_dict(obj, path)
        storages = _Storages(z, root, path)
        state, dtypes = {}, {}
        for name, t in tensors.items():
            state[name], dtypes[name] = _materialize(name, t, storages, path)
    return state, dtypes
