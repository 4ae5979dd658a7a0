"""Weight import and export (scripts/convert_weight.py): HuggingFace Llama folders (safetensors or PyTorch, sharded
or not), GGUF, PyTorch state dicts, MindSpore .ckpt/.safetensors in; MindSpore files or a HuggingFace folder out;
fused or separate projections; any float precision.

Everything passes through one ``Weights``: MindFormers name → array plus each tensor's stored dtype, so a bfloat16
model stays bfloat16 unless ``dtype`` says otherwise (NumPy has no bfloat16: those arrays hold the exact float32
widening). Safetensors are read and written here byte for byte (bfloat16 included, no torch); .ckpt through
MindSpore. The source is never written: outputs go to a temporary name beside the target and are renamed at the end.
"""
import dataclasses
import json
import logging
import os
import struct
import time

import numpy as np

from mindkit.checkpoint.fused import FFN, QKV, match_layout
from mindkit.checkpoint.hf_names import HF_BUFFERS, hf_to_mindformers, is_hf_naming, mindformers_to_hf
from mindkit.checkpoint.quantize import GROUP_SIZE, quantization_params, quantize_state
from mindkit.checkpoint.torch_state import bf16_to_float32, float32_to_bf16, read_torch_state
from mindkit.errors import CheckpointError

logger = logging.getLogger("mindkit")
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
TORCH_SUFFIXES = (".bin", ".pth", ".pt")
HF_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HF_SINGLES = ("model.safetensors", "pytorch_model.bin")
PROGRESS_EVERY = 64  # tensors between progress lines


@dataclasses.dataclass
class Weights:
    tensors: dict                                    # MindFormers name → numpy array
    dtypes: dict                                     # name → dtype as stored ("bfloat16", "float32", "int8", ...)
    config: dict = dataclasses.field(default_factory=dict)  # HF config.json keys known with the source


# ---------------------------------------------------------------- safetensors, byte for byte
_ST = {"F64": ("<f8", "float64"), "F32": ("<f4", "float32"), "F16": ("<f2", "float16"), "BF16": ("<u2", "bfloat16"),
       "I64": ("<i8", "int64"), "I32": ("<i4", "int32"), "I16": ("<i2", "int16"), "I8": ("i1", "int8"),
       "U8": ("u1", "uint8"), "BOOL": ("?", "bool")}
_ST_CODE = {name: code for code, (_, name) in _ST.items()}


def _header(f, path, size):
    raw = f.read(8)
    n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
    if not 0 < n <= size - 8:
        raise CheckpointError("--input", path, "a safetensors file (8-byte header length, then a JSON header)")
    try:
        return json.loads(f.read(n)), 8 + n
    except ValueError:
        raise CheckpointError(f"{path}: header", "invalid JSON", "a safetensors JSON header") from None


def _tensor_of(name, info, data, path):
    if info.get("dtype") not in _ST:
        raise CheckpointError(f"{path}: tensor {name}", info.get("dtype"), "one of " + ", ".join(_ST))
    np_dtype, dtype = np.dtype(_ST[info["dtype"]][0]), _ST[info["dtype"]][1]
    shape, (begin, end) = tuple(info["shape"]), info["data_offsets"]
    if end - begin != int(np.prod(shape)) * np_dtype.itemsize or not 0 <= begin <= end <= len(data):
        raise CheckpointError(f"{path}: tensor {name}", f"bytes {begin}..{end} of {len(data)}",
                              f"{int(np.prod(shape)) * np_dtype.itemsize} bytes for shape {shape} {dtype}")
    value = np.frombuffer(data[begin:end], np_dtype).reshape(shape)
    return (bf16_to_float32(value) if dtype == "bfloat16" else value.copy()), dtype


def read_safetensors(path):
    """(name → array, name → dtype) of any safetensors file, bfloat16 widened exactly."""
    with open(path, "rb") as f:
        header, start = _header(f, path, os.fstat(f.fileno()).st_size)
        f.seek(start)
        data = f.read()
    tensors, dtypes = {}, {}
    for name, info in header.items():
        if name != "__metadata__":
            tensors[name], dtypes[name] = _tensor_of(name, info, data, path)
    return tensors, dtypes


def _stored(array, dtype):
    """The array as ``dtype`` stores it (bfloat16 as its uint16 bits)."""
    if dtype == "bfloat16":
        return float32_to_bf16(np.asarray(array, np.float32))
    return np.ascontiguousarray(array, np.dtype(_ST[_ST_CODE[dtype]][0]))


def _itemsize(dtype):
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def write_safetensors(path, w, fmt):
    odd = sorted(n for n, d in w.dtypes.items() if d not in _ST_CODE)
    if odd:
        raise CheckpointError(f"tensor {odd[0]}", w.dtypes[odd[0]], "a dtype safetensors stores: " + ", ".join(_ST))
    header, offset = {"__metadata__": {"format": fmt}}, 0
    for name, value in w.tensors.items():
        nbytes = int(np.prod(value.shape)) * _itemsize(w.dtypes[name])
        header[name] = {"dtype": _ST_CODE[w.dtypes[name]], "shape": list(value.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for value in _progress(w, "wrote"):
            f.write(value.tobytes())


def _progress(w, verb):
    """Each tensor in its stored form, with a log line every PROGRESS_EVERY tensors."""
    done = 0
    for i, (name, value) in enumerate(w.tensors.items(), 1):
        stored = _stored(value, w.dtypes[name])
        done += stored.nbytes
        if i % PROGRESS_EVERY == 0 or i == len(w.tensors):
            logger.info("%s %d/%d tensors (%.1f MiB)", verb, i, len(w.tensors), done / 2**20)
        yield stored


# ---------------------------------------------------------------- MindSpore .ckpt
def read_ckpt(path):
    import mindspore as ms
    try:
        params = ms.load_checkpoint(path)
    except (ValueError, RuntimeError, OSError) as e:
        raise CheckpointError("--input", path, "a readable MindSpore .ckpt",
                              hint=str(e).strip().splitlines()[0][:200] if str(e).strip() else None) from None
    dtypes = {name: str(p.dtype).lower() for name, p in params.items()}
    return {name: (p.astype(ms.float32) if dtypes[name] == "bfloat16" else p).asnumpy()
            for name, p in params.items()}, dtypes


def write_ckpt(path, w):
    import mindspore as ms
    items = []
    for (name, dtype), stored in zip(w.dtypes.items(), _progress(w, "converted")):
        tensor = ms.Tensor(bf16_to_float32(stored)).astype(ms.bfloat16) if dtype == "bfloat16" else ms.Tensor(stored)
        items.append({"name": name, "data": tensor})
    ms.save_checkpoint(items, path)


# ---------------------------------------------------------------- inputs
def input_kind(path):
    if not os.path.exists(path):
        raise CheckpointError("--input", path, "an existing checkpoint file or HuggingFace folder")
    if os.path.isdir(path):
        names = os.listdir(path)
        if any(n.endswith((".safetensors", ".bin")) or n in HF_INDEXES for n in names):
            return "hf"
        hint = "a distributed checkpoint: merge it with scripts/transform_checkpoint.py first" \
            if any(n.startswith("rank_") for n in names) else None
        raise CheckpointError("--input", path, "a HuggingFace folder (model.safetensors, pytorch_model.bin or a "
                              "sharded index)", hint=hint)
    for kind, suffixes in (("ckpt", (".ckpt",)), ("safetensors", (".safetensors",)), ("gguf", (".gguf",)),
                           ("torch", TORCH_SUFFIXES)):
        if path.endswith(suffixes):
            return kind
    raise CheckpointError("--input", path, "a .ckpt, .safetensors, .gguf, .bin, .pth or .pt file, or a folder")


def hf_files(folder):
    """The weight files of a HF folder and the index's name → file map (empty without an index)."""
    for index in HF_INDEXES:
        path = os.path.join(folder, index)
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    weight_map = json.load(f)["weight_map"]
            except (ValueError, KeyError, TypeError):
                raise CheckpointError(path, "no weight_map", "a JSON index with a weight_map") from None
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
            if missing:
                raise CheckpointError(f"{path}: shard {missing[0]}", "missing", "every shard the index names",
                                      hint=f"{len(missing)} missing in all" if len(missing) > 1 else None)
            return [os.path.join(folder, f) for f in files], weight_map
    for single in HF_SINGLES:
        if os.path.isfile(os.path.join(folder, single)):
            return [os.path.join(folder, single)], {}
    files = sorted(f for f in os.listdir(folder) if f.endswith((".safetensors", ".bin")))
    kinds = {os.path.splitext(f)[1] for f in files}
    if len(files) > 1 or len(kinds) != 1:
        raise CheckpointError("--input", folder, "model.safetensors, pytorch_model.bin or an index naming the shards",
                              hint=f"found {', '.join(files[:4])}: which belong together is unclear")
    return [os.path.join(folder, files[0])], {}


def _read_file(path):
    return read_torch_state(path) if path.endswith(TORCH_SUFFIXES) else read_safetensors(path)


def _json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise CheckpointError(path, f"invalid JSON ({e})", "a JSON object") from None


def read_hf_folder(folder):
    files, weight_map = hf_files(folder)
    tensors, dtypes = {}, {}
    for i, path in enumerate(files, 1):
        part, part_dtypes = _read_file(path)
        logger.info("read %s (%d/%d files, %d tensors)", path, i, len(files), len(part))
        twice = sorted(set(part) & set(tensors))
        if twice:
            raise CheckpointError(f"{path}: tensor {twice[0]}", "also in another shard", "each tensor in one file")
        tensors.update(part)
        dtypes.update(part_dtypes)
    for name, file in weight_map.items():
        if name not in tensors:
            raise CheckpointError(f"{os.path.join(folder, file)}: tensor {name}", "missing",
                                  "every tensor the index lists")
    config_path = os.path.join(folder, "config.json")
    config = _json(config_path) if os.path.isfile(config_path) else {}
    return Weights(*from_hf(tensors, dtypes, folder), config)


def from_hf(tensors, dtypes, source):
    """HuggingFace names → MindFormers names; HF's rotary buffers are dropped, any other unknown name is an error."""
    renamed, skipped = hf_to_mindformers(tensors)
    unknown = sorted(n for n in skipped if not n.endswith(HF_BUFFERS))
    if unknown:
        raise CheckpointError(f"{source}: tensor {unknown[0]}", "no MindFormers counterpart",
                              "HuggingFace Llama tensor names", hint=_listing(unknown, "unknown"))
    if skipped:
        logger.info("dropped %d HuggingFace buffers (%s)", len(skipped), skipped[0])
    return renamed, hf_to_mindformers(dtypes)[0]


def _listing(names, what):
    return f"{len(names)} {what}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"


def _gguf_config(path):
    from mindkit.checkpoint.gguf_weights import gguf_model_config
    return {HF_KEYS[k]: v for k, v in gguf_model_config(path, "--input").items() if v is not None and k in HF_KEYS}


def read_gguf(path):
    from mindkit.checkpoint.gguf_weights import read_gguf_state
    state = read_gguf_state(path, "--input")
    unknown = sorted(k for k, v in state.items() if v is None)
    if unknown:
        raise CheckpointError(f"{path}: tensor {unknown[0]}", "no MindFormers counterpart", "Llama GGUF tensor names",
                              hint=_listing(unknown, "unknown"))
    return Weights(state, {k: "float32" for k in state}, _gguf_config(path))


def _read_named_file(path, reader, strict):
    """A single file with HF names (renamed) or MindFormers names (kept; with ``strict``, only Llama's)."""
    tensors, dtypes = reader(path)
    if is_hf_naming(tensors):
        return Weights(*from_hf(tensors, dtypes, path))
    unknown = sorted(mindformers_to_hf(tensors)[1]) if strict else []
    if unknown:
        raise CheckpointError(f"{path}: tensor {unknown[0]}", "an unknown name",
                              "HuggingFace or MindFormers Llama tensor names", hint=_listing(unknown, "unknown"))
    return Weights(tensors, dtypes)


def read_weights(path):
    """``Weights`` with MindFormers names from any supported input."""
    kind = input_kind(path)
    if kind == "hf":
        return read_hf_folder(path)
    if kind == "gguf":
        return read_gguf(path)
    reader = {"ckpt": read_ckpt, "safetensors": read_safetensors, "torch": read_torch_state}[kind]
    return _read_named_file(path, reader, strict=kind == "torch")


def source_files(path):
    if input_kind(path) != "hf":
        return [path]
    extra = [os.path.join(path, n) for n in ("config.json", *HF_INDEXES) if os.path.isfile(os.path.join(path, n))]
    return hf_files(path)[0] + extra


# ---------------------------------------------------------------- hyperparameters (HF config.json keys)
HF_KEYS = {"hidden_size": "hidden_size", "intermediate_size": "intermediate_size", "num_layers": "num_hidden_layers",
           "num_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads", "vocab_size": "vocab_size",
           "rms_norm_eps": "rms_norm_eps", "theta": "rope_theta", "tie_word_embeddings": "tie_word_embeddings",
           "seq_length": "max_position_embeddings", "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id"}


def config_of_model(c):
    """HF config keys of a mindkit LlamaConfig."""
    values = {"hidden_size": c.hidden_size, "intermediate_size": c.ffn_hidden_size, "num_layers": c.num_layers,
              "num_heads": c.num_heads, "n_kv_heads": c.kv_heads, "vocab_size": c.vocab_size,
              "rms_norm_eps": c.rms_norm_eps, "theta": c.theta, "tie_word_embeddings": c.tie_word_embeddings,
              "seq_length": c.seq_length, "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id}
    return {HF_KEYS[k]: v for k, v in values.items() if v is not None}


def _rows(tensors, p="model.layers.0."):
    """(query rows, key/value rows) of the layer named ``p...``, from separate or fused projections."""
    if p + QKV[1][0] in tensors:
        return tensors[p + QKV[1][0]].shape[0], tensors[p + QKV[1][1]].shape[0]
    if p + QKV[0] in tensors and p + "attention.wo.weight" in tensors:
        q = tensors[p + "attention.wo.weight"].shape[1]
        return q, (tensors[p + QKV[0]].shape[0] - q) // 2
    return None, None


def shape_config(tensors):
    """The HF config keys the weights' shapes decide."""
    out = {}
    embed = tensors.get("model.tok_embeddings.embedding_weight")
    if embed is not None:
        out["vocab_size"], out["hidden_size"] = embed.shape
        out["tie_word_embeddings"] = "lm_head.weight" not in tensors
    layers = {int(n.split(".")[2]) for n in tensors if n.startswith("model.layers.")}
    if layers:
        out["num_hidden_layers"] = max(layers) + 1
    w1, gh = "model.layers.0." + FFN[1][0], "model.layers.0." + FFN[0]
    if w1 in tensors or gh in tensors:
        out["intermediate_size"] = tensors[w1].shape[0] if w1 in tensors else tensors[gh].shape[0] // 2
    return out


def resolve_heads(tensors, known):
    """Fill num_attention_heads / num_key_value_heads when one is known: the projections' rows give the other."""
    q_rows, kv_rows = _rows(tensors)
    heads, kv = known.get("num_attention_heads"), known.get("num_key_value_heads")
    if q_rows is None or (heads is None and kv is None):
        return known
    head_dim = q_rows // heads if heads else kv_rows // kv
    checks = (("num_attention_heads", q_rows, heads), ("num_key_value_heads", kv_rows, kv))
    for key, rows, count in sorted(checks, key=lambda c: c[2] is None):  # a given count is named first
        if not head_dim or rows % head_dim or (count is not None and count * head_dim != rows):
            raise CheckpointError(key, count, f"a head count that cuts the projections ({q_rows} query and "
                                              f"{kv_rows} key/value rows) into heads of one size")
    out = {**known, "num_attention_heads": q_rows // head_dim, "num_key_value_heads": kv_rows // head_dim}
    if q_rows != known.get("hidden_size"):
        out["head_dim"] = head_dim
    return out


def known_config(w, model_config=None, num_heads=None, n_kv_heads=None):
    """HF config keys from the source, the model config and the flags (in rising precedence), checked against the
    weights' shapes and completed from them."""
    known = dict(w.config)
    if model_config is not None:
        known.update(config_of_model(model_config))
    known.update({k: v for k, v in (("num_attention_heads", num_heads), ("num_key_value_heads", n_kv_heads))
                  if v is not None})
    shapes = shape_config(w.tensors)
    for key, value in shapes.items():
        if key in known and known[key] != value and key != "tie_word_embeddings":
            raise CheckpointError(key, known[key], f"{value}, as the weights' shapes say")
    return resolve_heads(w.tensors, {**known, **shapes})


# ---------------------------------------------------------------- transforms
def _widest(dtypes):
    dtypes = set(dtypes)
    return dtypes.pop() if len(dtypes) == 1 else ("float64" if "float64" in dtypes else "float32")


def set_fused(w, fused, n_kv):
    """Fuse (``fused``) or split the attention and FFN projections (MindFormers' w_qkv / w_gate_hidden layout)."""
    if not n_kv:
        raise CheckpointError("--n_kv_heads", n_kv, "the number of KV heads to " + ("fuse" if fused else "split") +
                              " QKV", hint="give --n_kv_heads or --model_config")
    q_rows, kv_rows = _rows(w.tensors)
    if q_rows is not None and (q_rows % n_kv or kv_rows % n_kv):
        raise CheckpointError("--n_kv_heads", n_kv, f"a divisor of the query ({q_rows}) and key ({kv_rows}) rows")
    expected = _fused_shapes(w.tensors) if fused else _split_shapes(w.tensors)
    tensors = match_layout(w.tensors, expected, n_kv)
    left = sorted(set(expected) - set(tensors))
    if left:
        raise CheckpointError(f"tensor {left[0]}", "not producible", "projections whose rows add up",
                              hint=_listing(left, "left"))
    return Weights(tensors, _fused_dtypes(w.dtypes, tensors), w.config)


def _prefixes(names, suffix):
    return sorted({n[: -len(suffix)] for n in names if n.endswith(suffix)})


def _fused_shapes(tensors):
    """The names of the fused form (shapes are not needed to fuse)."""
    return {p + whole: None for whole, parts in (QKV, FFN) for p in _prefixes(tensors, parts[0])}


def _split_shapes(tensors):
    """Names and row counts of the separate form."""
    out = {}
    for p in _prefixes(tensors, QKV[0]):
        q, kv = _rows(tensors, p)
        out.update({p + QKV[1][0]: (q,), p + QKV[1][1]: (kv,), p + QKV[1][2]: (kv,)})
    for p in _prefixes(tensors, FFN[0]):
        out.update({p + s: (tensors[p + FFN[0]].shape[0] // 2,) for s in FFN[1]})
    return out


def _fused_dtypes(dtypes, tensors):
    out = {}
    for name in tensors:
        if name in dtypes:
            out[name] = dtypes[name]
            continue
        for whole, parts in (QKV, FFN):
            if name.endswith(whole):
                out[name] = _widest(dtypes[name[: -len(whole)] + s] for s in parts)
            elif name.endswith(parts):
                out[name] = dtypes[name[: name.rindex(next(s for s in parts if name.endswith(s)))] + whole]
    return out


def cast(w, dtype):
    """Float tensors (int8 weights' float32 scales and offsets excepted) to ``dtype``; None keeps each as stored."""
    if dtype is None:
        return w
    dtypes = {k: dtype if d in FLOAT_DTYPES + ("float64",) and quantization_params(k, w.tensors) is None else d
              for k, d in w.dtypes.items()}
    return Weights(w.tensors, dtypes, w.config)


def quantize(w, group_size):
    expected = "a multiple of 8 that divides the input width of every weight quantized"
    if group_size < 8 or group_size % 8:
        raise CheckpointError("--quant_group_size", group_size, expected)
    try:
        tensors = quantize_state(w.tensors, group_size=group_size)
    except ValueError as e:
        raise CheckpointError("--quant_group_size", group_size, expected, hint=str(e)) from None
    dtypes = {k: w.dtypes[k] if k in w.dtypes and v.dtype.kind == "f" else str(v.dtype) for k, v in tensors.items()}
    return Weights(tensors, dtypes, w.config)


# ---------------------------------------------------------------- outputs
def output_kind(path, to=None):
    suffix = os.path.splitext(path.rstrip("/"))[1]
    if to == "hf" and suffix in (".ckpt", ".safetensors"):
        raise CheckpointError("--output", path, "a folder path for --to hf (model.safetensors and config.json go in)")
    if to == "hf":
        return "hf"
    if suffix in (".ckpt", ".safetensors"):
        return suffix[1:]
    if to == "mindspore" or suffix in TORCH_SUFFIXES + (".gguf",):
        raise CheckpointError("--output", path, "a .ckpt or .safetensors file, or a folder for a HuggingFace model",
                              hint="mindkit writes no PyTorch or GGUF files")
    return "hf"


def _targets(path, kind):
    return [os.path.join(path, "model.safetensors"), os.path.join(path, "config.json")] if kind == "hf" else [path]


def check_paths(src, out, kind, force):
    """Refuse anything that could overwrite the source or an existing output without --force."""
    sources = {os.path.realpath(f) for f in source_files(src)} | {os.path.realpath(src)}
    for target in [out] + _targets(out, kind):
        if os.path.realpath(target) in sources:
            raise CheckpointError("--output", out, "a path apart from the input", hint=f"{target} is the input")
    if not os.path.exists(out):
        return
    if not force:
        raise CheckpointError("--output", out, "a path that does not exist yet", hint="--force replaces it")
    if os.path.isdir(out) != (kind == "hf"):
        raise CheckpointError("--output", out, "a folder" if kind == "hf" else "a file", hint="it exists as the other")
    if kind == "hf":
        ours = {os.path.basename(t) for t in _targets(out, kind)}
        stray = sorted(f for f in os.listdir(out) if f not in ours and (f.endswith((".safetensors", ".bin"))
                                                                         or f in HF_INDEXES))
        if stray:
            raise CheckpointError(f"--output {out}", f"weights {stray[0]}", "a folder without other weight files",
                                  hint="--force replaces files and deletes none; remove them yourself")


def _atomic(target, write):
    """Write through a temporary file beside ``target`` and rename it into place at the end."""
    head, tail = os.path.split(os.path.abspath(target))
    base, suffix = os.path.splitext(tail)
    tmp = os.path.join(head, f".{base}.partial-{os.getpid()}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def hf_config_json(config, dtype):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", **config,
            "torch_dtype": dtype}


def write_hf_folder(path, w, config):
    """``model.safetensors`` with HF names, and ``config.json`` when the head counts are known."""
    extra = sorted(n for n in w.tensors if n.endswith(QKV[0]) or n.endswith(FFN[0]))
    if extra:
        w = set_fused(w, False, config.get("num_key_value_heads"))
    tensors, unknown = mindformers_to_hf(w.tensors)
    if unknown:
        raise CheckpointError(f"tensor {sorted(unknown)[0]}", "no HuggingFace Llama counterpart",
                              "MindFormers Llama names", hint=_listing(sorted(unknown), "unknown"))
    hf = Weights(tensors, mindformers_to_hf(w.dtypes)[0])
    os.makedirs(path, exist_ok=True)
    _atomic(os.path.join(path, "model.safetensors"), lambda tmp: write_safetensors(tmp, hf, "pt"))
    _write_config(path, w, config)
    return hf


def _write_config(path, w, config):
    missing = [k for k in ("num_attention_heads", "num_key_value_heads") if k not in config]
    if missing:
        logger.warning("config.json not written: %s not known (give --model_config, --num_heads or --n_kv_heads)",
                       " and ".join(missing))
        return
    unset = [k for k in ("rope_theta", "rms_norm_eps", "max_position_embeddings") if k not in config]
    if unset:
        logger.warning("config.json: %s not known from the weights; transformers' defaults apply", ", ".join(unset))
    dtype = w.dtypes.get("model.tok_embeddings.embedding_weight", "float32")
    text = json.dumps(hf_config_json(config, dtype), indent=2) + "\n"
    _atomic(os.path.join(path, "config.json"), lambda tmp: _write_text(tmp, text))


def _write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_weights(path, kind, w, config):
    """Write ``w`` as ``kind``; returns what was written (a HF folder's tensors are split and renamed)."""
    if kind == "hf":
        return write_hf_folder(path, w, config)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _atomic(path, lambda tmp: write_ckpt(tmp, w) if kind == "ckpt" else write_safetensors(tmp, w, "ms"))
    return w


def normalize_dtype(dtype):
    if dtype is None:
        return None
    dtype = DTYPE_ALIASES.get(dtype, dtype)
    if dtype not in FLOAT_DTYPES:
        raise CheckpointError("--dtype", dtype, "one of " + ", ".join(FLOAT_DTYPES) + " (or fp32, fp16, bf16)")
    return dtype


def convert_weights(src, out, to=None, model_config=None, qkv_concat=None, n_kv_heads=None, num_heads=None,
                    dtype=None, quant_weight=None, quant_group_size=GROUP_SIZE, force=False):
    """Convert ``src`` into ``out``; returns a summary dict (tensors, bytes, seconds)."""
    t0 = time.perf_counter()
    dtype, kind = normalize_dtype(dtype), output_kind(out, to)
    check_paths(src, out, kind, force)
    w = read_weights(src)
    config = known_config(w, model_config, num_heads, n_kv_heads)
    if qkv_concat is not None:
        w = set_fused(w, qkv_concat, config.get("num_key_value_heads"))
    if quant_weight == "int8":
        w = quantize(w, quant_group_size)
    w = cast(w, dtype)
    w = write_weights(out, kind, w, config)
    nbytes = sum(int(np.prod(v.shape)) * _itemsize(w.dtypes[k]) for k, v in w.tensors.items())
    summary = {"tensors": len(w.tensors), "bytes": nbytes, "seconds": round(time.perf_counter() - t0, 2)}
    logger.info("converted %d tensors (%.1f MiB) from %s to %s in %.1f s", summary["tensors"], nbytes / 2**20, src,
                out, summary["seconds"])
    return summary
