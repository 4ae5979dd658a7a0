"""Llama (Llama 2, SmolLM2, ...) in plain MindSpore ops, parameter names exactly as MindFormers' LlamaForCausalLM.

Shapes: B batch, L new tokens this call, S KV-cache slots. Prompts are left-padded so every row writes the same
cache slots; ``positions`` (B, L) are each row's RoPE positions and ``key_valid`` (B, S) marks real (non-pad)
cache slots, so padding never changes a row's result.
"""
import re

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindkit.generation.mixin import GenerationMixin
from mindkit.models.layers import (Embedding, Linear, RMSNorm, apply_rope, cast, ms_dtype, rope_tables,
                                   rotate_half_matrix)
from mindkit.models.llama_config import LlamaConfig
from mindkit.ops.int8_matmul import Int8MatMul
from mindkit.parallel.pipeline import PipelineStage
from mindkit.parallel.tensor_parallel import TPGroup
from mindkit.registry import register

MASK_VALUE = -1e9


class LlamaAttention(nn.Cell):
    """GQA attention: query heads are grouped over the KV heads (head h reads KV head h // (heads / kv_heads))."""

    def __init__(self, cfg: LlamaConfig, tp=TPGroup()):
        super().__init__()
        # tensor parallel: each rank owns whole KV groups (its KV heads and the query heads that read them)
        tp.local(cfg.kv_heads, "n_kv_heads")
        self.n_heads, self.n_kv, self.hd = tp.local(cfg.num_heads, "num_heads"), cfg.kv_heads // tp.size, cfg.head_dim
        self.qkv_concat = cfg.qkv_concat
        q_out, kv_out = cfg.num_heads * self.hd, cfg.kv_heads * self.hd
        lin = dict(param_init_type=cfg.param_init_type, compute_dtype=cfg.compute_dtype, tp=tp, quant=cfg.quant_weight)
        if self.qkv_concat:
            self.w_qkv = Linear(cfg.hidden_size, q_out + 2 * kv_out, split_axis=0, **lin)
        else:
            self.wq = Linear(cfg.hidden_size, q_out, split_axis=0, **lin)
            self.wk = Linear(cfg.hidden_size, kv_out, split_axis=0, **lin)
            self.wv = Linear(cfg.hidden_size, kv_out, split_axis=0, **lin)
        self.wo = Linear(q_out, cfg.hidden_size, split_axis=1, **lin)
        self.softmax_dtype = ms_dtype(cfg.softmax_compute_type)
        self.scale = 1.0 / float(np.sqrt(self.hd))
        self.bmm_t = ops.BatchMatMul(transpose_b=True)
        self.rot = rotate_half_matrix(self.hd, ms_dtype(cfg.compute_dtype))

    def _qkv(self, x, cos, sin):
        """q (B, L, n_kv, rep, hd) and k, v (B, L, n_kv, hd), RoPE applied; cos/sin (B, L, 1, hd)."""
        B, L, _ = x.shape
        rep = self.n_heads // self.n_kv
        if self.qkv_concat:  # rows grouped per KV head [q heads of group g; k_g; v_g]: one RoPE for q and k
            qk, v = ops.split(self.w_qkv(x).reshape(B, L, self.n_kv, rep + 2, self.hd), [rep + 1, 1], axis=3)
            qk = apply_rope(qk, cos.reshape(B, L, 1, 1, -1), sin.reshape(B, L, 1, 1, -1), self.rot)
            q, k = ops.split(qk, [rep, 1], axis=3)
            return q, k.reshape(B, L, self.n_kv, self.hd), v.reshape(B, L, self.n_kv, self.hd)
        q = apply_rope(self.wq(x).reshape(B, L, self.n_heads, self.hd), cos, sin, self.rot)
        k = apply_rope(self.wk(x).reshape(B, L, self.n_kv, self.hd), cos, sin, self.rot)
        return q.reshape(B, L, self.n_kv, rep, self.hd), k, self.wv(x).reshape(B, L, self.n_kv, self.hd)

    def construct(self, x, cos, sin, mask, cache, start):
        B, L, _ = x.shape
        q, k, v = self._qkv(x, cos, sin)
        k_cache, v_cache = cache.write(k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), start)
        S, rep = k_cache.shape[2], self.n_heads // self.n_kv
        q = q.transpose(0, 2, 3, 1, 4).reshape(B, self.n_kv, rep * L, self.hd)
        scores = cast(self.bmm_t(q, cast(k_cache, q.dtype)), self.softmax_dtype) * self.scale
        scores = scores.reshape(B, self.n_kv, rep, L, S) + mask
        probs = cast(ops.softmax(scores, -1), v_cache.dtype).reshape(B, self.n_kv, rep * L, S)
        out = ops.matmul(probs, v_cache)
        out = out.reshape(B, self.n_heads, L, self.hd).transpose(0, 2, 1, 3).reshape(B, L, -1)
        return self.wo(out)


class LlamaFeedForward(nn.Cell):
    """SwiGLU: w2(silu(w1 x) * w3 x); with ``qkv_concat``, ``w_gate_hidden`` interleaves w1 and w3 row by row."""

    def __init__(self, cfg: LlamaConfig, tp=TPGroup()):
        super().__init__()
        self.ffn = tp.local(cfg.ffn_hidden_size, "the FFN width")
        self.fused = cfg.qkv_concat
        lin = dict(param_init_type=cfg.param_init_type, compute_dtype=cfg.compute_dtype, tp=tp, quant=cfg.quant_weight)
        full = cfg.ffn_hidden_size
        if self.fused:
            self.w_gate_hidden = Linear(cfg.hidden_size, 2 * full, split_axis=0, **lin)
        else:
            self.w1 = Linear(cfg.hidden_size, full, split_axis=0, **lin)
            self.w3 = Linear(cfg.hidden_size, full, split_axis=0, **lin)
        self.w2 = Linear(full, cfg.hidden_size, split_axis=1, **lin)

    def construct(self, x):
        if self.fused:
            shape = x.shape[:-1] + (self.ffn,)
            gate, up = ops.split(self.w_gate_hidden(x).reshape(shape + (2,)), 1, axis=-1)
            gate, up = gate.reshape(shape), up.reshape(shape)
        else:
            gate, up = self.w1(x), self.w3(x)
        return self.w2(ops.silu(gate) * up)


class LlamaDecodeLayer(nn.Cell):
    def __init__(self, cfg: LlamaConfig, tp=TPGroup()):
        super().__init__()
        norm = dict(eps=cfg.rms_norm_eps, param_init_type=cfg.param_init_type,
                    compute_type=cfg.layernorm_compute_type)
        self.attention_norm = RMSNorm(cfg.hidden_size, **norm)
        self.attention = LlamaAttention(cfg, tp)
        self.ffn_norm = RMSNorm(cfg.hidden_size, **norm)
        self.feed_forward = LlamaFeedForward(cfg, tp)

    def construct(self, x, cos, sin, mask, cache, start):
        h = x + cast(self.attention(self.attention_norm(x), cos, sin, mask, cache, start), x.dtype)
        return h + cast(self.feed_forward(self.ffn_norm(h)), x.dtype)


class Handoff(nn.Cell):
    """Pipeline hand-off: the ``root`` stage's tensor, on every stage, as a sum in which the other stages add zeros
    (exact). MindSpore has no CPU Send/Receive kernels; run op by op (compiled graphs fail to launch collectives
    whose input folds to a constant, as a non-root stage's zeros do)."""

    def __init__(self, root, stage):
        super().__init__()
        self.is_root = root == stage
        self.reduce = ops.AllReduce()

    def construct(self, x):
        return self.reduce(x if self.is_root else ops.zeros_like(x))


class LlamaModel(nn.Cell):
    """Embedding, decoder layers, final norm. A pipeline stage holds only its layers (the others are empty
    placeholders, so parameter names keep their global layer index), the embedding if it is the first stage (or the
    last, when the head is tied to it), and the final norm if it is the last."""

    def __init__(self, cfg: LlamaConfig, tp=TPGroup(), stage=PipelineStage()):
        super().__init__()
        mine = stage.layers or range(cfg.num_layers)
        self.start, self.end, self.stages, self.stage = mine.start, mine.stop, stage.size, stage.rank
        self.first, self.last, self.hidden = stage.first, stage.last, cfg.hidden_size
        if stage.first or (stage.last and cfg.tie_word_embeddings):
            # int8 only when tied: then it is also the LM head, read whole every step
            self.tok_embeddings = Embedding(cfg.vocab_size, cfg.hidden_size, cfg.param_init_type, tp=tp,
                                            quant=cfg.quant_weight if cfg.tie_word_embeddings else None)
        self.layers = nn.CellList([LlamaDecodeLayer(cfg, tp) if i in mine else nn.Identity()
                                   for i in range(cfg.num_layers)])
        if stage.last:
            self.norm_out = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.param_init_type,
                                    cfg.layernorm_compute_type)
        self.handoffs = nn.CellList([Handoff(s, stage.rank) for s in range(stage.size - 1)])
        self.cos, self.sin = rope_tables(cfg.head_dim, cfg.seq_length, cfg.theta)  # float32: gathered per call
        self.rotary_dtype = ms_dtype(cfg.rotary_dtype)
        self.compute_dtype = ms_dtype(cfg.compute_dtype)

    def construct(self, input_ids, positions, key_valid, start, caches):
        B, L = input_ids.shape
        S = key_valid.shape[1]
        slots = ops.arange(L, dtype=ms.int32).reshape(L, 1) + start
        causal = ops.arange(S, dtype=ms.int32).reshape(1, S) <= slots                         # (L, S)
        allowed = ops.logical_and(causal.reshape(1, L, S), key_valid.reshape(B, 1, S))
        mask = ((1.0 - allowed.astype(ms.float32)) * MASK_VALUE).reshape(B, 1, 1, L, S)
        cos = cast(cast(ops.gather(self.cos, positions, 0).reshape(B, L, 1, -1), self.rotary_dtype), self.compute_dtype)
        sin = cast(cast(ops.gather(self.sin, positions, 0).reshape(B, L, 1, -1), self.rotary_dtype), self.compute_dtype)
        if self.first:
            h = cast(self.tok_embeddings(input_ids), self.compute_dtype)
        else:
            h = ops.zeros((B, L, self.hidden), self.compute_dtype)
        for s in range(self.stages - 1):  # earlier stages run in turn and hand their output on
            if s == self.stage:
                h = self._run_layers(h, cos, sin, mask, caches, start)
            h = self.handoffs[s](h)
        if self.last:
            return self.norm_out(self._run_layers(h, cos, sin, mask, caches, start))
        return h

    def _run_layers(self, h, cos, sin, mask, caches, start):
        for i in range(self.start, self.end):
            h = self.layers[i](h, cos, sin, mask, caches[i - self.start], start)
        return h


@register("model")
class LlamaForCausalLM(nn.Cell, GenerationMixin):
    """``model.*`` backbone + ``lm_head`` (absent when ``tie_word_embeddings``: the embedding is the LM head).
    With a tensor-parallel group ``tp`` each rank computes the logits of its vocabulary slice; they are gathered."""

    def __init__(self, config: LlamaConfig, tp=TPGroup(), stage=PipelineStage()):
        super().__init__()
        self.config, self.tp = config, tp
        self.model = LlamaModel(config, tp, stage)
        self.holds_head, self.pipelined = stage.last, stage.size > 1
        if not config.tie_word_embeddings and stage.last:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, config.param_init_type,
                                  config.compute_dtype, split_axis=0, tp=tp, quant=config.quant_weight)
        self.tied = config.tie_word_embeddings
        self.head_matmul = ops.MatMul(transpose_b=True)
        self.head_qmatmul = Int8MatMul() if config.quant_weight == "int8" and stage.last else None
        self.gather = tp.all_gather()
        self.logits_handoff = Handoff(stage.size - 1, stage.rank) if stage.size > 1 else None  # last stage's logits
        self.compute_dtype = ms_dtype(config.compute_dtype)
        self.stage_layers = range(self.model.start, self.model.end)
        self.cache_layers = len(self.stage_layers)
        self.cache_kv_heads = self.model.layers[self.model.start].attention.n_kv if self.cache_layers else 0

    def foreign_param(self, name):
        """A checkpoint parameter another pipeline stage holds (not an error when this stage does not)."""
        m = re.match(r"model\.layers\.(\d+)\.", name)
        if m:
            return int(m.group(1)) not in self.stage_layers
        return name.startswith(("model.tok_embeddings.", "model.norm_out.", "lm_head."))

    def construct(self, input_ids, positions, key_valid, start, caches, last_only=True):
        h = self.model(input_ids, positions, key_valid, start, caches)
        if last_only:
            h = h[:, -1:]
        B, L, H = h.shape
        if self.holds_head:
            h = cast(h.reshape(B * L, H), self.compute_dtype)
            head = self.model.tok_embeddings if self.tied else self.lm_head
            if self.head_qmatmul is not None:
                scale = head.embedding_weight_scale if self.tied else head.weight_scale
                logits = self.head_qmatmul(h, head.embedding_weight if self.tied else head.weight, scale)
            else:
                weight = head.embedding_weight if self.tied else head.weight
                logits = cast(self.head_matmul(h, cast(weight, self.compute_dtype)), ms.float32)
            if self.gather is not None:  # (tp * B * L, V / tp) -> (B * L, V)
                logits = self.gather(logits).reshape(self.tp.size, B * L, -1).transpose(1, 0, 2)
        else:
            logits = ops.zeros((B * L, self.config.vocab_size), ms.float32)
        if self.logits_handoff is not None:
            logits = self.logits_handoff(logits)
        return logits.reshape(B, L, -1)

    def forward_full(self, input_ids):
        """Logits for every position of unpadded ``input_ids`` (B, L) numpy/list; used by parity checks and eval."""
        ids = Tensor(np.asarray(input_ids, np.int32))
        B, L = ids.shape
        positions = Tensor(np.tile(np.arange(L, dtype=np.int32), (B, 1)))
        valid = Tensor(np.ones((B, L), np.bool_))
        from mindkit.generation.kv_cache import KVCache
        return self(ids, positions, valid, 0, KVCache.for_model(self, B, L).layers, last_only=False)
