"""HuggingFace Llama parameter names ↔ MindFormers names (one-to-one; both keep rotate-half RoPE, no permutation)."""
import re

# Non-weights some HF checkpoints carry (recomputed by every model); dropped on import.
HF_BUFFERS = ("rotary_emb.inv_freq",)

_TEMPLATES = [  # (HuggingFace, MindFormers)
    ("model.embed_tokens.weight", "model.tok_embeddings.embedding_weight"),
    ("model.layers.{i}.self_attn.q_proj.weight", "model.layers.{i}.attention.wq.weight"),
    ("model.layers.{i}.self_attn.k_proj.weight", "model.layers.{i}.attention.wk.weight"),
    ("model.layers.{i}.self_attn.v_proj.weight", "model.layers.{i}.attention.wv.weight"),
    ("model.layers.{i}.self_attn.o_proj.weight", "model.layers.{i}.attention.wo.weight"),
    ("model.layers.{i}.mlp.gate_proj.weight", "model.layers.{i}.feed_forward.w1.weight"),
    ("model.layers.{i}.mlp.up_proj.weight", "model.layers.{i}.feed_forward.w3.weight"),
    ("model.layers.{i}.mlp.down_proj.weight", "model.layers.{i}.feed_forward.w2.weight"),
    ("model.layers.{i}.input_layernorm.weight", "model.layers.{i}.attention_norm.weight"),
    ("model.layers.{i}.post_attention_layernorm.weight", "model.layers.{i}.ffn_norm.weight"),
    ("model.norm.weight", "model.norm_out.weight"),
    ("lm_head.weight", "lm_head.weight"),
]


def _pattern(template):
    return re.compile(re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)") + "$")


_TO_MF = [(_pattern(hf), mf) for hf, mf in _TEMPLATES]
_TO_HF = [(_pattern(mf), hf) for hf, mf in _TEMPLATES]


def _rename(state, rules):
    out, skipped = {}, []
    for name, value in state.items():
        for pat, template in rules:
            m = pat.match(name)
            if m:
                out[template.format(**m.groupdict())] = value
                break
        else:
            skipped.append(name)
    return out, skipped


def hf_to_mindformers(state):
    """Rename a HF Llama state dict. Returns (renamed, names with no counterpart, e.g. rotary buffers)."""
    return _rename(state, _TO_MF)


def mindformers_to_hf(state):
    return _rename(state, _TO_HF)


def is_hf_naming(names):
    """Whether ``names`` are HuggingFace's (any name HF and MindFormers spell differently is HF's)."""
    renamed, _ = hf_to_mindformers(dict.fromkeys(names))
    return any(n != "lm_head.weight" for n in renamed)
