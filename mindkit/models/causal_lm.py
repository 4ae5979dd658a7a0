"""What every decoder-only model shares, whatever its parameter names: attention over the preallocated KV cache, the
pipeline-staged layer stack, and the LM head with its vocabulary gather (Llama and ChatGLM2 are built on these).

``CausalLM`` is the interface the rest of mindkit uses (generation, training, checkpoint loading, serving):
``construct(input_ids, positions, key_valid, start, caches, last_only)``, ``cache_layers``, ``cache_kv_heads``,
``cache_head_dim``, ``holds_head``, ``pipelined``, ``foreign_param``, ``adapt_checkpoint``, ``tied_head``,
``head_name``, ``forward_full``, and ``config`` (``seq_length``, ``vocab_size``, ``use_past``, token ids, generation
defaults). Shapes: B batch, L new tokens this call, S KV-cache slots.
"""
import re

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindkit.generation.mixin import GenerationMixin
from mindkit.models.layers import (apply_rope, cast, few_rows_matmul, inference_kernel, matmul_t, ms_dtype, rope_at,
                                   rope_partners, rotate_half_matrix)
from mindkit.ops import decode_kernels
from mindkit.ops.int8_matmul import Int8MatMul
from mindkit.parallel.pipeline import PipelineStage
from mindkit.parallel.tensor_parallel import TPGroup

MASK_VALUE = -1e9


def attention_mask(key_valid, start, L):
    """Additive mask (B, 1, 1, L, S): new token t (cache slot start + t) sees the real slots up to its own."""
    B, S = key_valid.shape
    slots = ops.arange(L, dtype=ms.int32).reshape(L, 1) + start
    causal = ops.arange(S, dtype=ms.int32).reshape(1, S) <= slots                             # (L, S)
    allowed = ops.logical_and(causal.reshape(1, L, S), key_valid.reshape(B, 1, S))
    return ((1.0 - allowed.astype(ms.float32)) * MASK_VALUE).reshape(B, 1, 1, L, S)


class StepInputs(nn.Cell):
    """What every layer of one call shares: the attention mask, and the RoPE rows at each token's position (tables
    from ``rope_tables``, float32, gathered per call, then cast)."""

    def __init__(self, tables, rotary_dtype, compute_dtype):
        super().__init__()
        self.cos, self.sin = tables
        self.rotary_dtype, self.compute_dtype = ms_dtype(rotary_dtype), ms_dtype(compute_dtype)

    def construct(self, positions, key_valid, start):
        mask = attention_mask(key_valid, start, positions.shape[1])
        cos, sin = rope_at(self.cos, self.sin, positions, self.rotary_dtype, self.compute_dtype)
        return mask, cos, sin


class CachedAttention(nn.Cell):
    """RoPE, then softmax attention of ``n_heads`` query heads over ``n_kv`` cached KV heads, query heads in
    consecutive equal groups per KV head. ``kv_of_head`` (the KV head each query head reads) is for heads that do not
    fall into equal groups (a tensor-parallel rank whose heads straddle KV groups): then K/V are expanded per head
    after the cache, which still holds each KV head once. ``rotary_dim``/``interleaved``: see layers.rope_partners.
    In float32 inference this is one fused kernel (see layers.inference_kernel)."""

    def __init__(self, n_heads, n_kv, head_dim, softmax_dtype, compute_dtype, kv_of_head=None, rotary_dim=None,
                 interleaved=False):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = n_heads, n_kv, head_dim
        self.kv_index = None if kv_of_head is None else Tensor(np.asarray(kv_of_head, np.int32))
        self.groups = n_heads if kv_of_head is not None else n_kv
        self.rep = n_heads // self.groups
        self.softmax_dtype = ms_dtype(softmax_dtype)
        self.scale = 1.0 / float(np.sqrt(head_dim))
        self.bmm_t = ops.BatchMatMul(transpose_b=True)
        self.rot = rotate_half_matrix(head_dim, ms_dtype(compute_dtype), rotary_dim, interleaved)
        partner, sign = rope_partners(head_dim, rotary_dim, interleaved)
        self.partner, self.sign = Tensor(partner), Tensor(sign)
        float32 = softmax_dtype == compute_dtype == "float32"
        self.fused = decode_kernels.cached_attention() if float32 and kv_of_head is None else None

    def kernel_takes(self, x, cache):
        """Whether this call's attention runs as a kernel: float32 inference (see inference_kernel) writing a whole
        float32 cache in place."""
        return cache.whole and inference_kernel(self.fused, self.training, x) and cache.k.dtype == ms.float32

    def kernel_inputs(self, B, L, cos, sin, mask, cache, start):
        """What the attention kernels take after the heads: the RoPE rows, the partner tables, the caches, the mask
        and the first slot written."""
        start = ops.scalar_to_tensor(start, ms.int32) if isinstance(start, int) else start
        return (cos.reshape(B, L, -1), sin.reshape(B, L, -1), self.partner, self.sign, cache.k, cache.v,
                mask.reshape(B, L, -1), start)

    def construct(self, q, k, v, cos, sin, mask, cache, start, out=None, residual=None):
        """q: (B, L, ...) holding n_heads * hd per token, heads in order; k, v: (B, L, n_kv, hd); q and k before
        RoPE. Or, with k and v None, q is a fused projection's (B, L, n_kv, heads per KV head + 2, hd): each KV
        head's query heads, then its key and value. Returns (B, L, n_heads * hd), or with ``out`` (the output
        projection, a Linear) ``out(attention, residual)``: in a decode step one kernel (see Linear.folds)."""
        B, L = q.shape[0], q.shape[1]
        if self.kernel_takes(q, cache):
            if k is None:  # the kernel reads the fused layout in place
                k = v = q
            else:
                q = q.reshape(B, L, self.n_heads, self.hd)
            args = (q, k, v) + self.kernel_inputs(B, L, cos, sin, mask, cache, start)
            if out is not None and residual is not None and out.folds(B * L):
                return self.fused(*args, out.weight, residual)
            y = self.fused(*args)
        else:
            y = self.plain(q, k, v, cos, sin, mask, cache, start)
        return y if out is None else out(y, residual)

    def plain(self, q, k, v, cos, sin, mask, cache, start):
        """The same attention in MindSpore ops (training, other dtypes, a cache view, no kernel)."""
        B, L = q.shape[0], q.shape[1]
        if k is None:
            q, k, v = ops.split(q, [self.rep, 1, 1], axis=3)
            k, v = k.reshape(B, L, self.n_kv, self.hd), v.reshape(B, L, self.n_kv, self.hd)
        q = apply_rope(q.reshape(B, L, self.n_heads, self.hd), cos, sin, self.rot)
        k = apply_rope(k, cos, sin, self.rot)
        k_cache, v_cache = cache.write(k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), start)
        if self.kv_index is not None:
            k_cache, v_cache = ops.gather(k_cache, self.kv_index, 1), ops.gather(v_cache, self.kv_index, 1)
        S, G, rep = k_cache.shape[2], self.groups, self.rep
        q = q.reshape(B, L, G, rep, self.hd).transpose(0, 2, 3, 1, 4).reshape(B, G, rep * L, self.hd)
        scores = cast(self.bmm_t(q, cast(k_cache, q.dtype)), self.softmax_dtype) * self.scale
        scores = scores.reshape(B, G, rep, L, S) + mask
        probs = cast(ops.softmax(scores, -1), v_cache.dtype).reshape(B, G, rep * L, S)
        out = ops.matmul(probs, v_cache)
        return out.reshape(B, self.n_heads, L, self.hd).transpose(0, 2, 1, 3).reshape(B, L, -1)


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


class StagedLayers(nn.Cell):
    """The cell that holds a model's decoder ``layers``. A pipeline stage builds only its own layers (the others are
    empty placeholders, so parameter names keep their global layer index); the stages run in turn, each handing its
    output to the next."""

    def build_layers(self, num_layers, make_layer, stage):
        mine = stage.layers or range(num_layers)
        self.start, self.end, self.stages, self.stage = mine.start, mine.stop, stage.size, stage.rank
        self.first, self.last = stage.first, stage.last
        self.layers = nn.CellList([make_layer(i) if i in mine else nn.Identity() for i in range(num_layers)])
        self.handoffs = nn.CellList([Handoff(s, stage.rank) for s in range(stage.size - 1)])

    def run_layers(self, h, cos, sin, mask, caches, start):
        """The whole stack on the last stage (earlier stages' layers included, handed on); on an earlier stage, the
        last stage's input."""
        for s in range(self.stages - 1):
            if s == self.stage:
                h = self._own_layers(h, cos, sin, mask, caches, start)
            h = self.handoffs[s](h)
        if self.last:
            h = self._own_layers(h, cos, sin, mask, caches, start)
        return h

    def _own_layers(self, h, cos, sin, mask, caches, start):
        for i in range(self.start, self.end):
            h = self.layers[i](h, cos, sin, mask, caches[i - self.start], start)
        return h


class CausalLM(nn.Cell, GenerationMixin):
    """Base of the ``model.arch`` classes: a subclass builds its backbone (calling ``describe_cache`` once its
    layers exist) and says where its head and layers are; this class turns hidden states into logits. With a
    tensor-parallel group each rank computes the logits of its vocabulary slice and they are gathered; with
    pipeline stages the last stage's logits reach every rank."""
    head_name = None      # the Linear that is the LM head (its weight is multiplied directly: no LoRA there)
    layer_names = None    # regex matching a decoder layer's parameter names, the layer index as group 1
    stage_names = ()      # prefixes of the parameters only the first or the last stage holds

    def __init__(self, config, tp=TPGroup(), stage=PipelineStage(), quant=None):
        super().__init__()
        self.config, self.tp = config, tp
        self.holds_head, self.pipelined = stage.last, stage.size > 1
        self.tied_head = None  # (head name, the parameter it is tied to): a checkpoint may carry the copy
        self.head_matmul = ops.MatMul(transpose_b=True)
        self.head_few_rows = few_rows_matmul(config.param_init_type, config.compute_dtype)
        self.head_qmatmul = Int8MatMul() if quant == "int8" and stage.last else None
        self.gather = tp.all_gather()
        self.logits_handoff = Handoff(stage.size - 1, stage.rank) if stage.size > 1 else None
        self.compute_dtype = ms_dtype(config.compute_dtype)

    def describe_cache(self, stack):
        """What this rank's KV cache holds (mindkit.generation.kv_cache): its stage's layers, its KV heads."""
        self.stage_layers = range(stack.start, stack.end)
        self.cache_layers = len(self.stage_layers)
        cores = [cell for _, cell in stack.cells_and_names() if isinstance(cell, CachedAttention)]
        self.cache_kv_heads = cores[0].n_kv if cores else 0
        self.cache_head_dim = cores[0].hd if cores else 0

    def hidden_states(self, input_ids, positions, key_valid, start, caches):
        """(B, L, hidden) after the final norm (on the last stage)."""
        raise NotImplementedError

    def head_weight(self):
        raise NotImplementedError

    def head_scale(self):
        """The int8 head's (scale, offset) per group (quant_weight: int8 only)."""
        raise NotImplementedError

    def adapt_checkpoint(self, state, expected, local):
        """A checkpoint's tensors in this model's parameter names and forms (``expected``: name -> shape; ``local``:
        this rank's slices rather than full weights). Nothing to adapt by default."""
        return state

    def foreign_param(self, name):
        """A checkpoint parameter another pipeline stage holds (not an error when this stage does not)."""
        m = re.match(self.layer_names, name)
        if m:
            return int(m.group(1)) not in self.stage_layers
        return name.startswith(self.stage_names)

    def construct(self, input_ids, positions, key_valid, start, caches, last_only=True):
        h = self.hidden_states(input_ids, positions, key_valid, start, caches)
        if last_only and h.shape[1] > 1:  # (a decode step's one token needs no slice op)
            h = h[:, -1:]
        B, L, H = h.shape
        if self.holds_head:
            h = cast(h.reshape(B * L, H), self.compute_dtype)
            if self.head_qmatmul is not None:
                logits = self.head_qmatmul(h, self.head_weight(), *self.head_scale())
            else:
                logits = cast(matmul_t(self.head_matmul, self.head_few_rows, h,
                                       cast(self.head_weight(), self.compute_dtype), self.training), ms.float32)
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
