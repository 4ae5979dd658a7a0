"""Parameter names, shapes and element sizes of a checkpoint file without reading its weights.

Checks before and after a transform need only these; reading a multi-GB file to get them costs as much as the
transform itself. A safetensors file starts with a JSON header. A MindSpore .ckpt is one protobuf ``Checkpoint``
(``mindspore/train/checkpoint_pb2``): repeated ``Value {1: tag, 2: TensorProto {1: dims, 2: tensor_type,
3: tensor_content}}``; we walk its field headers and seek past every tensor's bytes.
"""
import json
import os
import struct

_SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1}
_CKPT_BYTES = {"Float64": 8, "Float32": 4, "Float16": 2, "BFloat16": 2, "Int64": 8, "Int32": 4, "Int16": 2,
               "Int8": 1, "UInt8": 1, "Bool": 1}


def safetensors_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: (tuple(v["shape"]), _SAFETENSORS_BYTES.get(v["dtype"], 4)) for k, v in header.items()
            if k != "__metadata__"}


def _varint(f):
    shift = result = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise EOFError
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7


def _fields(f, end):
    """(field number, wire type, value): varints as ints, length-delimited fields as their length (the caller reads
    or skips them)."""
    while f.tell() < end:
        key = _varint(f)
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, _varint(f)
        elif wire == 2:
            yield number, wire, _varint(f)
        elif wire in (1, 5):
            f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")


def _tensor(f, end):
    dims, dtype = [], None
    for number, wire, value in _fields(f, end):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1:  # packed dims
            stop = f.tell() + value
            while f.tell() < stop:
                dims.append(_varint(f))
        elif number == 2:
            dtype = f.read(value).decode()
        else:
            _skip(f, wire, value)
    return tuple(dims), _CKPT_BYTES.get(dtype, 4)


def _skip(f, wire, value):
    if wire == 2:
        f.seek(value, os.SEEK_CUR)


def ckpt_header(path):
    """name → (shape, bytes per element) of a MindSpore .ckpt. A large tensor saved as several pieces under one
    name keeps its first piece's shape."""
    out = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for number, wire, length in _fields(f, size):
            end = f.tell() + length
            if number != 1 or wire != 2:
                _skip(f, wire, length)
                continue
            name, info = None, None
            for field, wire, value in _fields(f, end):
                if field == 1:
                    name = f.read(value).decode()
                elif field == 2:
                    info = _tensor(f, f.tell() + value)
                else:
                    _skip(f, wire, value)
            if name is not None and info is not None:
                out.setdefault(name, info)
            f.seek(end)
    return out


def checkpoint_header(path):
    return safetensors_header(path) if path.endswith(".safetensors") else ckpt_header(path)
