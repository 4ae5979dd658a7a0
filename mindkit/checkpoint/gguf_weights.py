"""GGUF (llama.cpp) Llama weights → MindFormers names, dequantized to float32.

llama.cpp permutes the rows of attn_q/attn_k so RoPE rotates adjacent pairs; we undo it, so the model keeps the
rotate-half RoPE MindFormers and HuggingFace use.
"""
import numpy as np

from mindkit.errors import CheckpointError
from mindkit.utils.gguf_file import metadata, open_gguf

_LAYER_NAMES = {
    "attn_norm": "attention_norm.weight", "attn_q": "attention.wq.weight", "attn_k": "attention.wk.weight",
    "attn_v": "attention.wv.weight", "attn_output": "attention.wo.weight", "ffn_norm": "ffn_norm.weight",
    "ffn_gate": "feed_forward.w1.weight", "ffn_up": "feed_forward.w3.weight", "ffn_down": "feed_forward.w2.weight",
}
_GLOBAL_NAMES = {"token_embd.weight": "model.tok_embeddings.embedding_weight", "output_norm.weight": "model.norm_out.weight",
                 "output.weight": "lm_head.weight"}


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def mindformers_name(gguf_name):
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".")
    if parts[0] == "blk" and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}"
    return None


def read_gguf_state(path, key="load_checkpoint"):
    from gguf.quants import dequantize
    reader = open_gguf(path, key)
    arch = metadata(reader, "general.architecture")
    n_head = metadata(reader, "llama.attention.head_count")
    if arch != "llama" or n_head is None:
        raise CheckpointError(key, path, "a GGUF of a Llama-architecture model (general.architecture = llama)",
                              hint=f"found {arch!r}")
    n_kv = metadata(reader, "llama.attention.head_count_kv", n_head)
    state = {}
    for t in reader.tensors:
        name = mindformers_name(t.name)
        if name is None:
            state[t.name] = None  # reported as an unexpected parameter by the loader
            continue
        try:
            w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        except NotImplementedError:
            raise CheckpointError(f"{path}: tensor {t.name}", t.tensor_type.name,
                                  "a quantization type the gguf package can dequantize") from None
        w = w.reshape(tuple(reversed(t.shape.tolist())))
        if name.endswith("attention.wq.weight"):
            w = unpermute(w, n_head)
        elif name.endswith("attention.wk.weight"):
            w = unpermute(w, n_kv)
        state[name] = w
    return state


def gguf_model_config(path, key="load_checkpoint"):
    """LlamaConfig values recorded in a GGUF's metadata (the loader checks a config against them)."""
    r = open_gguf(path, key)

    def get(key):
        value = metadata(r, "llama." + key)
        return float(str(np.float32(value))) if isinstance(value, float) else value  # float32 1e-5, not 9.99e-6

    names = {t.name for t in r.tensors}
    return {"num_layers": get("block_count"), "hidden_size": get("embedding_length"),
            "num_heads": get("attention.head_count"), "n_kv_heads": get("attention.head_count_kv"),
            "intermediate_size": get("feed_forward_length"), "rms_norm_eps": get("attention.layer_norm_rms_epsilon"),
            "theta": get("rope.freq_base"), "vocab_size": get("vocab_size") or len(metadata(r, "tokenizer.ggml.tokens")),
            "tie_word_embeddings": "output.weight" not in names}
