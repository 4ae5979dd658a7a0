"""Llama (Llama 2, SmolLM2, ...) in plain MindSpore ops, parameter names exactly as MindFormers' LlamaForCausalLM.

Shapes: B batch, L new tokens this call, S KV-cache slots. Prompts are left-padded so every row writes the same
cache slots; ``positions`` (B, L) are each row's RoPE positions and ``key_valid`` (B, S) marks real (non-pad)
cache slots, so padding never changes a row's result.
"""
from mindspore import nn, ops

from mindkit.checkpoint.fused import match_layout
from mindkit.models.causal_lm import CachedAttention, CausalLM, StagedLayers, StepInputs
from mindkit.models.layers import (Embedding, Linear, RMSNorm, SwiGLU, cast, decode_block, inference_kernel,
                                   ms_dtype, rope_tables)
from mindkit.models.llama_config import LlamaConfig
from mindkit.ops import decode_kernels
from mindkit.parallel.pipeline import PipelineStage
from mindkit.parallel.tensor_parallel import TPGroup
from mindkit.registry import register


class LlamaAttention(nn.Cell):
    """GQA attention: query heads are grouped over the KV heads (head h reads KV head h // (heads / kv_heads))."""

    def __init__(self, cfg: LlamaConfig, tp=TPGroup()):
        super().__init__()
        # tensor parallel: each rank owns whole KV groups (its KV heads and the query heads that read them)
        tp.local(cfg.kv_heads, "n_kv_heads")
        self.n_heads, self.n_kv, self.hd = tp.local(cfg.num_heads, "num_heads"), cfg.kv_heads // tp.size, cfg.head_dim
        self.qkv_concat = cfg.qkv_concat
        q_out, kv_out = cfg.num_heads * self.hd, cfg.kv_heads * self.hd
        lin = dict(param_init_type=cfg.param_init_type, compute_dtype=cfg.compute_dtype, tp=tp, quant=cfg.quant_weight,
                   group_size=cfg.quant_group_size)
        if self.qkv_concat:
            self.w_qkv = Linear(cfg.hidden_size, q_out + 2 * kv_out, split_axis=0, **lin)
        else:
            self.wq = Linear(cfg.hidden_size, q_out, split_axis=0, **lin)
            self.wk = Linear(cfg.hidden_size, kv_out, split_axis=0, **lin)
            self.wv = Linear(cfg.hidden_size, kv_out, split_axis=0, **lin)
        self.wo = Linear(q_out, cfg.hidden_size, split_axis=1, **lin)
        self.core = CachedAttention(self.n_heads, self.n_kv, self.hd, cfg.softmax_compute_type, cfg.compute_dtype)
        self.block = decode_kernels.attention_block() if cfg.compute_dtype == "float32" else None

    def folds(self, rows):
        """Whether every projection may run inside the block's kernel (Linear.folds)."""
        if self.qkv_concat:
            return self.w_qkv.folds(rows) and self.wo.folds(rows)
        return self.wq.folds(rows) and self.wk.folds(rows) and self.wv.folds(rows) and self.wo.folds(rows)

    def block_takes(self, x, norm, residual, cache):
        """Whether this call is one AttentionBlock kernel (layers.decode_block, the cache, Linear.folds)."""
        return (decode_block(self.block, self.training, x, norm, residual) and self.core.kernel_takes(x, cache)
                and self.folds(x.size // x.shape[-1]))

    def block_inputs(self, x, cos, sin, mask, cache, start, norm):
        """The AttentionBlock kernel's inputs before the residual."""
        B, L, _ = x.shape
        weights = (self.w_qkv.weight,) if self.qkv_concat else (self.wq.weight, self.wk.weight, self.wv.weight)
        return (x, norm.weight, norm.eps_tensor, *weights, *self.core.kernel_inputs(B, L, cos, sin, mask, cache, start),
                self.wo.weight)

    def construct(self, x, cos, sin, mask, cache, start, norm=None, residual=None):
        """``norm``: the RMSNorm applied to x first; ``residual``: what the output projection adds its result to (see
        Linear). A decode step's block (both given) is one kernel."""
        B, L, _ = x.shape
        if self.block_takes(x, norm, residual, cache):
            return self.block(*self.block_inputs(x, cos, sin, mask, cache, start, norm), residual)
        if norm is not None:
            x = norm(x)
        if self.qkv_concat:  # rows grouped per KV head: [q heads of group g; k_g; v_g]
            qkv = self.w_qkv(x).reshape(B, L, self.n_kv, self.n_heads // self.n_kv + 2, self.hd)
            return self.core(qkv, None, None, cos, sin, mask, cache, start, self.wo, residual)
        kv = (B, L, self.n_kv, self.hd)
        q, k, v = self.wq(x), self.wk(x).reshape(kv), self.wv(x).reshape(kv)
        return self.core(q, k, v, cos, sin, mask, cache, start, self.wo, residual)


class LlamaFeedForward(nn.Cell):
    """SwiGLU: w2(silu(w1 x) * w3 x); with ``qkv_concat``, ``w_gate_hidden`` interleaves w1 and w3 row by row."""

    def __init__(self, cfg: LlamaConfig, tp=TPGroup()):
        super().__init__()
        tp.local(cfg.ffn_hidden_size, "the FFN width")
        self.fused = cfg.qkv_concat
        lin = dict(param_init_type=cfg.param_init_type, compute_dtype=cfg.compute_dtype, tp=tp, quant=cfg.quant_weight,
                   group_size=cfg.quant_group_size)
        full = cfg.ffn_hidden_size
        if self.fused:
            self.w_gate_hidden = Linear(cfg.hidden_size, 2 * full, split_axis=0, **lin)
        else:
            self.w1 = Linear(cfg.hidden_size, full, split_axis=0, **lin)
            self.w3 = Linear(cfg.hidden_size, full, split_axis=0, **lin)
        self.w2 = Linear(full, cfg.hidden_size, split_axis=1, **lin)
        float32 = cfg.compute_dtype == "float32"
        self.act = decode_kernels.silu_mul() if float32 else None
        self.swiglu = SwiGLU(float32)
        self.block = decode_kernels.feed_forward() if float32 else None

    def folds(self, rows):
        """Whether every projection may run inside the block's kernel (Linear.folds)."""
        if self.fused:
            return self.w_gate_hidden.folds(rows) and self.w2.folds(rows)
        return self.w1.folds(rows) and self.w3.folds(rows) and self.w2.folds(rows)

    def block_takes(self, x, norm, residual):
        """Whether this call is one FeedForward kernel (layers.decode_block, Linear.folds)."""
        return decode_block(self.block, self.training, x, norm, residual) and self.folds(x.size // x.shape[-1])

    def block_weights(self, norm):
        """The FeedForward kernel's inputs between x and the residual."""
        weights = (self.w_gate_hidden.weight,) if self.fused else (self.w1.weight, self.w3.weight)
        return (norm.weight, norm.eps_tensor, *weights, self.w2.weight)

    def construct(self, x, norm=None, residual=None):
        """``norm``: the RMSNorm applied to x first; ``residual``: what w2 adds its result to (see Linear). A decode
        step's block (both given) is one kernel."""
        if self.block_takes(x, norm, residual):
            return self.block(x, *self.block_weights(norm), residual)
        if norm is not None:
            x = norm(x)
        if self.fused:
            return self.w2(self.swiglu(self.w_gate_hidden(x)), residual)
        gate, up = self.w1(x), self.w3(x)
        if inference_kernel(self.act, self.training, gate):
            return self.w2(self.act(gate, up), residual)
        return self.w2(ops.silu(gate) * up, residual)


class LlamaDecodeLayer(nn.Cell):
    def __init__(self, cfg: LlamaConfig, tp=TPGroup()):
        super().__init__()
        norm = dict(eps=cfg.rms_norm_eps, param_init_type=cfg.param_init_type,
                    compute_type=cfg.layernorm_compute_type)
        self.attention_norm = RMSNorm(cfg.hidden_size, **norm)
        self.attention = LlamaAttention(cfg, tp)
        self.ffn_norm = RMSNorm(cfg.hidden_size, **norm)
        self.feed_forward = LlamaFeedForward(cfg, tp)
        self.kernel = decode_kernels.decoder_layer() if cfg.compute_dtype == "float32" else None

    def construct(self, x, cos, sin, mask, cache, start):
        # a decode step's layer is one kernel when both of its blocks would be one (h has x's shape)
        if (self.kernel is not None and self.attention.block_takes(x, self.attention_norm, x, cache)
                and self.feed_forward.block_takes(x, self.ffn_norm, x)):
            return self.kernel(*self.attention.block_inputs(x, cos, sin, mask, cache, start, self.attention_norm), x,
                               *self.feed_forward.block_weights(self.ffn_norm))
        h = self.attention(x, cos, sin, mask, cache, start, self.attention_norm, x)
        return self.feed_forward(h, self.ffn_norm, h)


class LlamaModel(StagedLayers):
    """Embedding, decoder layers, final norm. A pipeline stage holds only its layers, the embedding if it is the
    first stage (or the last, when the head is tied to it), and the final norm if it is the last."""

    def __init__(self, cfg: LlamaConfig, tp=TPGroup(), stage=PipelineStage()):
        super().__init__()
        self.hidden = cfg.hidden_size
        if stage.first or (stage.last and cfg.tie_word_embeddings):
            # int8 only when tied: then it is also the LM head, read whole every step
            self.tok_embeddings = Embedding(cfg.vocab_size, cfg.hidden_size, cfg.param_init_type, tp=tp,
                                            quant=cfg.quant_weight if cfg.tie_word_embeddings else None,
                                            group_size=cfg.quant_group_size)
        self.build_layers(cfg.num_layers, lambda i: LlamaDecodeLayer(cfg, tp), stage)
        if stage.last:
            self.norm_out = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.param_init_type,
                                    cfg.layernorm_compute_type)
        self.inputs = StepInputs(rope_tables(cfg.head_dim, cfg.seq_length, cfg.theta), cfg.rotary_dtype,
                                 cfg.compute_dtype)
        self.compute_dtype = ms_dtype(cfg.compute_dtype)

    def construct(self, input_ids, positions, key_valid, start, caches):
        B, L = input_ids.shape
        mask, cos, sin = self.inputs(positions, key_valid, start)
        if self.first:
            h = cast(self.tok_embeddings(input_ids), self.compute_dtype)
        else:
            h = ops.zeros((B, L, self.hidden), self.compute_dtype)
        h = self.run_layers(h, cos, sin, mask, caches, start)
        return self.norm_out(h) if self.last else h


@register("model")
class LlamaForCausalLM(CausalLM):
    """``model.*`` backbone + ``lm_head`` (absent when ``tie_word_embeddings``: the embedding is the LM head)."""
    head_name = "lm_head"
    layer_names = r"model\.layers\.(\d+)\."
    stage_names = ("model.tok_embeddings.", "model.norm_out.", "lm_head.")

    def __init__(self, config: LlamaConfig, tp=TPGroup(), stage=PipelineStage()):
        super().__init__(config, tp, stage, quant=config.quant_weight)
        self.model = LlamaModel(config, tp, stage)
        if not config.tie_word_embeddings and stage.last:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, config.param_init_type,
                                  config.compute_dtype, split_axis=0, tp=tp, quant=config.quant_weight,
                                  group_size=config.quant_group_size)
        self.tied = config.tie_word_embeddings
        if self.tied:
            self.tied_head = ("lm_head.weight", "model.tok_embeddings.embedding_weight")
        self.describe_cache(self.model)

    def hidden_states(self, input_ids, positions, key_valid, start, caches):
        return self.model(input_ids, positions, key_valid, start, caches)

    def head_weight(self):
        return self.model.tok_embeddings.embedding_weight if self.tied else self.lm_head.weight

    def head_scale(self):
        if self.tied:
            return self.model.tok_embeddings.embedding_weight_scale, self.model.tok_embeddings.embedding_weight_offset
        return self.lm_head.weight_scale, self.lm_head.weight_offset

    def adapt_checkpoint(self, state, expected, local):
        """Fused (``w_qkv``, ``w_gate_hidden``) or separate projections, as this model holds them."""
        return match_layout(state, expected, self.cache_kv_heads if local else self.config.kv_heads)
