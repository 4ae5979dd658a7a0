"""scripts/convert_weight.py and mindkit/checkpoint/convert.py: HuggingFace folders (sharded, bfloat16) <-> .ckpt,
.ckpt <-> .safetensors, fused <-> separate, precision casts, PyTorch files read without torch, GGUF; bit-exact round
trips on tiny random Llamas, converted files load and predict alike, and every bad input is one line naming it."""
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import REPO, TINY_CONFIG
from mindkit.checkpoint import read_state
from mindkit.checkpoint.convert import convert_weights, read_safetensors
from mindkit.checkpoint.torch_state import read_torch_state
from mindkit.errors import CheckpointError

sys.path.insert(0, os.path.join(REPO, "tests", "fixtures"))
import make_torch_fixture as fixture  # noqa: E402
import numpy_llama as ref  # noqa: E402

SCRIPT = os.path.join(REPO, "scripts", "convert_weight.py")
IDS = [1, 5, 9, 3, 7, 2]


# ------------------------------------------------------------------ helpers independent of the code under test
def hf_names_by_hand(layers):
    """HuggingFace transformers' LlamaForCausalLM state dict names → MindFormers names, written out by hand."""
    names = {"model.embed_tokens.weight": "model.tok_embeddings.embedding_weight",
             "model.norm.weight": "model.norm_out.weight", "lm_head.weight": "lm_head.weight"}
    for i in range(layers):
        hf, mf = f"model.layers.{i}.", f"model.layers.{i}."
        names.update({hf + "self_attn.q_proj.weight": mf + "attention.wq.weight",
                      hf + "self_attn.k_proj.weight": mf + "attention.wk.weight",
                      hf + "self_attn.v_proj.weight": mf + "attention.wv.weight",
                      hf + "self_attn.o_proj.weight": mf + "attention.wo.weight",
                      hf + "mlp.gate_proj.weight": mf + "feed_forward.w1.weight",
                      hf + "mlp.up_proj.weight": mf + "feed_forward.w3.weight",
                      hf + "mlp.down_proj.weight": mf + "feed_forward.w2.weight",
                      hf + "input_layernorm.weight": mf + "attention_norm.weight",
                      hf + "post_attention_layernorm.weight": mf + "ffn_norm.weight"})
    return names


def to_bf16_bits(x):
    """Truncating float32 → bfloat16 (exact for the bf16-representable values these tests use)."""
    return (np.ascontiguousarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def write_st(path, tensors, dtype="BF16"):
    """A safetensors file written by hand: every tensor as ``dtype`` (BF16 from float32 values, F32)."""
    header, blobs, offset = {}, [], 0
    for name, value in tensors.items():
        raw = (to_bf16_bits(value) if dtype == "BF16" else value.astype(np.float32)).tobytes()
        header[name] = {"dtype": dtype, "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def raw_tensors(path):
    """name → (dtype, shape, bytes) straight from a safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header, data = json.loads(f.read(n)), f.read()
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()
            if k != "__metadata__"}


def bf16_exact(state):
    """The state rounded down to bfloat16-representable float32 values."""
    return {k: (to_bf16_bits(v).astype(np.uint32) << 16).view(np.float32) for k, v in state.items()}


def same(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def ms_dtypes(path):
    import mindspore as ms
    return {k: str(v.dtype).lower() for k, v in ms.load_checkpoint(str(path)).items()}


def tiny_config(**overrides):
    from mindkit.config import load_yaml
    from mindkit.models import LlamaConfig
    return LlamaConfig.from_dict({**load_yaml(TINY_CONFIG)["model"]["model_config"], **overrides})


def tiny_logits(path, **overrides):
    from mindkit.checkpoint import load_weights
    from mindkit.models import LlamaForCausalLM
    model = LlamaForCausalLM(tiny_config(**overrides))
    load_weights(model, str(path))
    return model.forward_full([IDS]).asnumpy()[0]


def cli(*args, cwd, ok=True):
    proc = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    assert (proc.returncode == 0) == ok, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def tiny_state(tiny_ckpt):
    return read_state(tiny_ckpt)


# ------------------------------------------------------------------ names
def test_hf_names_follow_transformers():
    from mindkit.checkpoint.hf_names import hf_to_mindformers, is_hf_naming, mindformers_to_hf
    by_hand = hf_names_by_hand(3)
    renamed, skipped = hf_to_mindformers(dict.fromkeys(list(by_hand) + ["model.layers.0.self_attn.rotary_emb."
                                                                         "inv_freq"]))
    assert set(renamed) == set(by_hand.values()) and skipped == ["model.layers.0.self_attn.rotary_emb.inv_freq"]
    assert set(mindformers_to_hf(dict.fromkeys(by_hand.values()))[0]) == set(by_hand)
    assert is_hf_naming(by_hand) and not is_hf_naming(by_hand.values())


# ------------------------------------------------------------------ HuggingFace folders
def make_hf_folder(folder, state, shards=2):
    """A sharded bfloat16 HF folder (index + config.json) holding ``state`` (MindFormers names) by HF names."""
    to_hf = {mf: hf for hf, mf in hf_names_by_hand(2).items()}
    hf_state = {to_hf[k]: v for k, v in state.items()}
    names = sorted(hf_state)
    os.makedirs(folder)
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s::shards]
        write_st(os.path.join(folder, file), {k: hf_state[k] for k in part})
        weight_map.update(dict.fromkeys(part, file))
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 256, "rope_theta": 10000.0,
              "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "rope_scaling": None}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return hf_state


def test_sharded_bf16_hf_folder_to_ckpt_and_back_is_bit_exact(tiny_state, tmp_path):
    state = bf16_exact(tiny_state)
    make_hf_folder(tmp_path / "hf", state)
    convert_weights(str(tmp_path / "hf"), str(tmp_path / "m.ckpt"))
    assert same(read_state(str(tmp_path / "m.ckpt")), state)
    assert set(ms_dtypes(tmp_path / "m.ckpt").values()) == {"bfloat16"}  # kept as stored
    convert_weights(str(tmp_path / "m.ckpt"), str(tmp_path / "back"), model_config=None, n_kv_heads=2)
    original = {}
    for f in sorted(os.listdir(tmp_path / "hf")):
        if f.endswith(".safetensors"):
            original.update(raw_tensors(str(tmp_path / "hf" / f)))
    assert raw_tensors(str(tmp_path / "back" / "model.safetensors")) == original
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["intermediate_size"],
            config["torch_dtype"], config["tie_word_embeddings"]) == (4, 2, 192, "bfloat16", False)
    assert "head_dim" not in config


def test_hf_export_config_from_model_yaml_and_logits(tiny_ckpt, tmp_path):
    convert_weights(tiny_ckpt, str(tmp_path / "hf"), model_config=tiny_config())
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["rope_theta"], config["rms_norm_eps"], config["max_position_embeddings"]) == (10000.0, 1e-5, 128)
    convert_weights(str(tmp_path / "hf"), str(tmp_path / "again.ckpt"))
    assert np.array_equal(tiny_logits(tmp_path / "again.ckpt"), tiny_logits(tiny_ckpt))


# ------------------------------------------------------------------ MindSpore formats, layouts, precision
def test_ckpt_and_safetensors_round_trip(tiny_ckpt, tiny_state, tmp_path):
    import mindspore as ms
    convert_weights(tiny_ckpt, str(tmp_path / "a.safetensors"))
    loaded = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(tmp_path / "a.safetensors"), format="safetensors")
              .items()}
    assert same(loaded, tiny_state)  # MindSpore reads what we write
    convert_weights(str(tmp_path / "a.safetensors"), str(tmp_path / "b.ckpt"))
    assert same(read_state(str(tmp_path / "b.ckpt")), tiny_state)


@pytest.mark.parametrize("how", ["model_config", "n_kv_heads"])
def test_fused_and_split_round_trip_and_load(tiny_ckpt, tiny_state, tmp_path, how):
    heads = {"model_config": tiny_config()} if how == "model_config" else {"n_kv_heads": 2}
    convert_weights(tiny_ckpt, str(tmp_path / "fused.ckpt"), qkv_concat=True, **heads)
    fused = read_state(str(tmp_path / "fused.ckpt"))
    p = "model.layers.1."
    assert fused[p + "attention.w_qkv.weight"].shape == (128, 64)
    assert fused[p + "feed_forward.w_gate_hidden.weight"].shape == (384, 64)
    assert not any(k.endswith(("wq.weight", "wk.weight", "wv.weight", "w1.weight", "w3.weight")) for k in fused)
    # MindFormers' layout: per KV group [q heads; k; v] (head_dim 16), FFN rows interleaved w1/w3
    wq, wk, wv = (tiny_state[p + f"attention.{n}.weight"] for n in ("wq", "wk", "wv"))
    assert np.array_equal(fused[p + "attention.w_qkv.weight"][:64], np.concatenate([wq[:32], wk[:16], wv[:16]]))
    w3 = tiny_state[p + "feed_forward.w3.weight"]
    assert np.array_equal(fused[p + "feed_forward.w_gate_hidden.weight"][1::2], w3)
    convert_weights(str(tmp_path / "fused.ckpt"), str(tmp_path / "split.ckpt"), qkv_concat=False, **heads)
    assert same(read_state(str(tmp_path / "split.ckpt")), tiny_state)
    assert np.abs(tiny_logits(tmp_path / "fused.ckpt", qkv_concat=True) - tiny_logits(tiny_ckpt)).max() < 1e-5


def test_fused_checkpoint_exports_to_hf_split(tiny_ckpt, tiny_state, tmp_path):
    convert_weights(tiny_ckpt, str(tmp_path / "fused.ckpt"), qkv_concat=True, n_kv_heads=2)
    convert_weights(str(tmp_path / "fused.ckpt"), str(tmp_path / "hf"), num_heads=4)
    by_hand = hf_names_by_hand(2)
    hf, dtypes = read_safetensors(str(tmp_path / "hf" / "model.safetensors"))
    assert same({by_hand[k]: v for k, v in hf.items()}, tiny_state) and set(dtypes.values()) == {"float32"}


def test_precision_casts(tiny_ckpt, tiny_state, tmp_path):
    import mindspore as ms
    convert_weights(tiny_ckpt, str(tmp_path / "bf16.ckpt"), dtype="bfloat16")
    convert_weights(tiny_ckpt, str(tmp_path / "bf16.safetensors"), dtype="bf16")
    assert set(ms_dtypes(tmp_path / "bf16.ckpt").values()) == {"bfloat16"}
    name = "model.layers.0.attention.wq.weight"
    by_mindspore = ms.Tensor(tiny_state[name]).astype(ms.bfloat16).astype(ms.float32).asnumpy()
    assert np.array_equal(read_state(str(tmp_path / "bf16.ckpt"))[name], by_mindspore)  # round to nearest even
    assert same(read_state(str(tmp_path / "bf16.safetensors")), read_state(str(tmp_path / "bf16.ckpt")))
    convert_weights(str(tmp_path / "bf16.ckpt"), str(tmp_path / "fp32.ckpt"), dtype="float32")
    assert set(ms_dtypes(tmp_path / "fp32.ckpt").values()) == {"float32"}
    assert same(read_state(str(tmp_path / "fp32.ckpt")), read_state(str(tmp_path / "bf16.ckpt")))
    exact = bf16_exact(tiny_state)  # fp32 -> bf16 -> fp32 is the identity on bf16-representable values
    write_st(tmp_path / "exact.safetensors", exact, dtype="F32")
    convert_weights(str(tmp_path / "exact.safetensors"), str(tmp_path / "e16.safetensors"), dtype="bfloat16")
    convert_weights(str(tmp_path / "e16.safetensors"), str(tmp_path / "e32.ckpt"), dtype="float32")
    assert same(read_state(str(tmp_path / "e32.ckpt")), exact)
    convert_weights(tiny_ckpt, str(tmp_path / "fp16.ckpt"), dtype="float16")
    assert np.abs(tiny_logits(tmp_path / "fp16.ckpt") - tiny_logits(tiny_ckpt)).max() < 0.01
    assert np.abs(tiny_logits(tmp_path / "bf16.ckpt") - tiny_logits(tiny_ckpt)).max() < 0.05


# ------------------------------------------------------------------ PyTorch files without torch
def test_torch_reader_reads_the_fixture_exactly():
    state, dtypes = read_torch_state(fixture.FIXTURE)
    expected = fixture.expected_state()
    assert set(state) == set(expected)
    for name, (values, dtype) in expected.items():
        assert dtypes[name] == dtype and np.array_equal(state[name].astype(np.float32), values), name
        assert state[name].flags.c_contiguous
    try:
        import torch
    except ImportError:
        return  # the assertions above are the test; torch only adds a second opinion
    loaded = torch.load(fixture.FIXTURE, map_location="cpu", weights_only=True)
    assert set(loaded) == set(state)
    for name, t in loaded.items():
        assert str(t.dtype) == "torch." + dtypes[name] and np.array_equal(t.float().numpy(), state[name]), name


def test_torch_bin_to_ckpt_loads_and_predicts_like_numpy(tmp_path):
    """pt_to_ms via the MindFormers flag names; the result predicts as an independent NumPy forward does."""
    cli("--torch_ckpt_path", fixture.FIXTURE, "--mindspore_ckpt_path", tmp_path / "pt.ckpt", cwd=tmp_path)
    converted = read_state(str(tmp_path / "pt.ckpt"))
    by_hand = hf_names_by_hand(1)
    expected = {by_hand[k]: v for k, (v, _) in fixture.expected_state().items() if k in by_hand}
    assert same({k: v.astype(np.float32) for k, v in converted.items()}, expected)
    assert ms_dtypes(tmp_path / "pt.ckpt")["model.layers.0.attention.wq.weight"] == "bfloat16"
    from mindkit.checkpoint import load_weights
    from mindkit.models import LlamaConfig, LlamaForCausalLM
    c = fixture.CONFIG
    model = LlamaForCausalLM(LlamaConfig.from_dict({
        "hidden_size": c["hidden_size"], "num_layers": c["num_layers"], "num_heads": c["num_heads"],
        "n_kv_heads": c["n_kv_heads"], "vocab_size": c["vocab_size"], "intermediate_size": c["intermediate_size"],
        "tie_word_embeddings": True, "seq_length": 16, "rms_norm_eps": 1e-5, "compute_dtype": "float32",
        "param_init_type": "float32"}))
    load_weights(model, str(tmp_path / "pt.ckpt"))
    ids = [1, 5, 9, 3]
    want = ref.forward(expected, ids, num_heads=2, n_kv_heads=1)
    assert np.abs(model.forward_full([ids]).asnumpy()[0] - want).max() < 1e-4


def test_hf_folder_of_pytorch_shards(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "pytorch_model.bin").write_bytes(open(fixture.FIXTURE, "rb").read())
    convert_weights(str(hf), str(tmp_path / "m.safetensors"))
    assert "model.layers.0.attention.wq.weight" in read_safetensors(str(tmp_path / "m.safetensors"))[0]


# ------------------------------------------------------------------ GGUF
def test_gguf_to_ckpt(tiny_ckpt, tiny_state, tmp_path):
    gguf = pytest.importorskip("gguf")
    from mindkit.checkpoint.gguf_weights import unpermute
    w = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "llama")
    for key, value in (("block_count", 2), ("embedding_length", 64), ("attention.head_count", 4),
                       ("attention.head_count_kv", 2), ("feed_forward_length", 192), ("vocab_size", 256)):
        (w.add_uint32 if isinstance(value, int) else w.add_float32)(f"llama.{key}", value)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float32("llama.rope.freq_base", 10000.0)
    names = {"model.tok_embeddings.embedding_weight": "token_embd.weight",
             "model.norm_out.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    layer = {"attention_norm.weight": "attn_norm", "attention.wq.weight": "attn_q", "attention.wk.weight": "attn_k",
             "attention.wv.weight": "attn_v", "attention.wo.weight": "attn_output", "ffn_norm.weight": "ffn_norm",
             "feed_forward.w1.weight": "ffn_gate", "feed_forward.w3.weight": "ffn_up",
             "feed_forward.w2.weight": "ffn_down"}
    for i in range(2):
        names.update({f"model.layers.{i}.{k}": f"blk.{i}.{v}.weight" for k, v in layer.items()})
    for mf, g in names.items():
        value = tiny_state[mf]
        if mf.endswith(("wq.weight", "wk.weight")):  # llama.cpp's row order: the inverse of unpermute
            n = 4 if mf.endswith("wq.weight") else 2
            value = value.reshape(n, 2, -1, 64).swapaxes(1, 2).reshape(value.shape)
            assert np.array_equal(unpermute(value, n), tiny_state[mf])
        w.add_tensor(g, np.ascontiguousarray(value))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    convert_weights(str(tmp_path / "t.gguf"), str(tmp_path / "g.ckpt"))
    assert same(read_state(str(tmp_path / "g.ckpt")), tiny_state)
    convert_weights(str(tmp_path / "t.gguf"), str(tmp_path / "hf"))  # head counts from the GGUF's metadata
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["num_key_value_heads"] == 2


# ------------------------------------------------------------------ refusals
def torch_zip(path, pkl, storages=None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw)


class _Evil:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def bad_torch_files(tmp_path):
    """(file, text the error must name) for PyTorch files the reader refuses."""
    with zipfile.ZipFile(fixture.FIXTURE) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    pkl_name = next(n for n in entries if n.endswith("data.pkl"))
    cases = []
    torch_zip(tmp_path / "evil.bin", pickle.dumps({"w": _Evil()}, protocol=2))
    cases.append((tmp_path / "evil.bin", "system"))
    complex_pkl = entries[pkl_name].replace(b"torch\nHalfStorage", b"torch\nComplexFloatStorage")
    torch_zip(tmp_path / "complex.bin", complex_pkl)
    cases.append((tmp_path / "complex.bin", "torch.ComplexFloatStorage"))
    torch_zip(tmp_path / "notensor.bin", pickle.dumps({"model.norm.weight": [1.0, 2.0]}, protocol=2))
    cases.append((tmp_path / "notensor.bin", "'model.norm.weight'"))
    (tmp_path / "legacy.bin").write_bytes(pickle.dumps({"a": 1}))
    cases.append((tmp_path / "legacy.bin", "zip"))
    short = {n: (v[:10] if "/data/" in n and not n.endswith("pkl") else v) for n, v in entries.items()}
    with zipfile.ZipFile(tmp_path / "short.bin", "w") as z:
        for n, v in short.items():
            z.writestr(n, v)
    cases.append((tmp_path / "short.bin", "short.bin"))
    return cases


def test_bad_torch_files_are_refused_by_name(tmp_path):
    for path, needle in bad_torch_files(tmp_path):
        with pytest.raises(CheckpointError) as e:
            read_torch_state(str(path))
        assert needle in str(e.value) and str(path) in str(e.value), (path, str(e.value))
    assert not (tmp_path / "pwned").exists()


def test_bad_inputs_name_what_is_wrong(tiny_ckpt, tiny_state, tmp_path):
    (tmp_path / "exists.ckpt").write_bytes(b"mine")
    hf = tmp_path / "hf"
    make_hf_folder(hf, bf16_exact(tiny_state))
    odd = tmp_path / "odd"
    odd.mkdir()
    write_st(odd / "model.safetensors", {"model.layers.0.self_attn.q_norm.weight": np.ones(4, np.float32)})
    single = tmp_path / "single"
    single.mkdir()
    write_st(single / "model.safetensors", {"model.norm.weight": np.ones(64, np.float32)})
    lost = tmp_path / "lost"
    make_hf_folder(lost, bf16_exact(tiny_state))
    os.remove(lost / "model-00002-of-00002.safetensors")
    partial = tmp_path / "partial"
    make_hf_folder(partial, bf16_exact(tiny_state))
    index = json.loads((partial / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.7.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    (partial / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "model-00001-of-00002.safetensors").write_bytes(b"old")
    (tmp_path / "trunc.safetensors").write_bytes(open(hf / "model-00001-of-00002.safetensors", "rb").read()[:-8])
    import mindspore as ms
    ms.save_checkpoint([{"name": "adam_m.model.norm_out.weight", "data": ms.Tensor(np.ones(64, np.float32))}],
                       str(tmp_path / "train.ckpt"))
    wide = tiny_config(hidden_size=128)
    cases = [
        ((tiny_ckpt, tmp_path / "exists.ckpt"), {}, "does not exist yet"),
        ((tiny_ckpt, tiny_ckpt), {"force": True}, "apart from the input"),
        ((single / "model.safetensors", single), {"force": True, "to": "hf"}, "apart from the input"),
        ((tiny_ckpt, tmp_path / "f.ckpt"), {"qkv_concat": True}, "--n_kv_heads"),
        ((tiny_ckpt, tmp_path / "f.ckpt"), {"qkv_concat": True, "n_kv_heads": 3}, "num_key_value_heads: got 3"),
        ((tmp_path / "none.ckpt", tmp_path / "o.ckpt"), {}, "none.ckpt"),
        ((odd, tmp_path / "o.ckpt"), {}, "model.layers.0.self_attn.q_norm.weight"),
        ((lost, tmp_path / "o.ckpt"), {}, "model-00002-of-00002.safetensors"),
        ((partial, tmp_path / "o.ckpt"), {}, "model.layers.7.mlp.up_proj.weight"),
        ((tiny_ckpt, tmp_path / "stray"), {"force": True, "to": "hf"}, "model-00001-of-00002.safetensors"),
        ((tmp_path / "trunc.safetensors", tmp_path / "o.ckpt"), {}, "trunc.safetensors: tensor"),
        ((tmp_path / "train.ckpt", tmp_path / "out_hf"), {}, "adam_m.model.norm_out.weight"),
        ((tiny_ckpt, tmp_path / "o.ckpt"), {"dtype": "int4"}, "--dtype: got 'int4'"),
        ((tiny_ckpt, tmp_path / "o.gguf"), {}, "o.gguf"),
        ((tiny_ckpt, tmp_path / "o.ckpt"), {"model_config": wide}, "hidden_size: got 128; expected 64"),
        ((tiny_ckpt, tmp_path / "hf_out"), {"num_heads": 5}, "num_attention_heads: got 5"),
    ]
    for (src, out), kwargs, needle in cases:
        with pytest.raises(CheckpointError) as e:
            convert_weights(str(src), str(out), **kwargs)
        assert needle in str(e.value), (src, out, kwargs, str(e.value))
    assert (tmp_path / "exists.ckpt").read_bytes() == b"mine"
    assert (tmp_path / "stray" / "model-00001-of-00002.safetensors").read_bytes() == b"old"
    assert not any(f.startswith(".") for f in os.listdir(tmp_path))  # no temporary files left behind
    assert same(read_state(tiny_ckpt), tiny_state)


def test_cli_error_is_one_line_and_force_replaces(tiny_ckpt, tmp_path):
    (tmp_path / "exists.ckpt").write_bytes(b"mine")
    proc = cli("--input", tiny_ckpt, "--output", tmp_path / "exists.ckpt", cwd=tmp_path, ok=False)
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --output") and "--force" in proc.stderr
    proc = cli("--input_path", tiny_ckpt, "--output_path", tmp_path / "exists.ckpt", "--force", "--dtype", "fp16",
               cwd=tmp_path)
    assert "converted" in proc.stderr and ms_dtypes(tmp_path / "exists.ckpt")["model.norm_out.weight"] == "float16"


def test_hf_export_loads_in_transformers(tiny_ckpt, tmp_path):
    """A second opinion where transformers is installed (requirements-bench.txt): same logits from our export."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = tiny_config()  # rms_norm_eps is not in the weights' shapes: the model config gives it
    convert_weights(tiny_ckpt, str(tmp_path / "hf"), model_config=cfg, dtype="bfloat16")
    convert_weights(str(tmp_path / "hf"), str(tmp_path / "back.ckpt"))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), torch_dtype=torch.float32)
    with torch.no_grad():
        theirs = model(torch.tensor([IDS])).logits[0].numpy()
    assert np.abs(theirs - tiny_logits(tmp_path / "back.ckpt")).max() < 1e-4


@pytest.mark.slow
def test_real_gguf_to_ckpt(tmp_path):
    from conftest import SMOLLM2_CONFIG
    from mindkit.config import load_yaml
    from mindkit.utils.paths import resolve_path
    gguf = resolve_path(load_yaml(SMOLLM2_CONFIG)["load_checkpoint"], "load_checkpoint")
    convert_weights(gguf, str(tmp_path / "smollm2.ckpt"))
    assert same(read_state(str(tmp_path / "smollm2.ckpt")), read_state(gguf))
