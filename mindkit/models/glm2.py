"""ChatGLM2 (ChatGLM2-6B, ChatGLM3-6B, CodeGeeX2) in plain MindSpore ops, parameter names exactly as MindFormers'
ChatGLM2ForConditionalGeneration.

The network: multi-query attention (``multi_query_group_num`` KV heads of ``kv_channels`` dims) from one biased
``query_key_value`` whose rows are [q of every head; k of every group; v of every group]; RoPE on the first half of
each head's dims only, rotating interleaved pairs (2i, 2i+1), base 10000 * ``rope_ratio``; RMSNorm; a SwiGLU MLP
whose ``dense_h_to_4h`` rows are [gate; up]; an untied ``output_layer``.

Tensor parallelism. Both fused weights are split like any column-parallel Linear, in contiguous row blocks (axis 0)
— what MindSpore strategy files express and what MindFormers itself declares (``query_key_value`` and
``dense_h_to_4h`` sharded (mp, 1), bias (mp,)) — so strategy files, weight sharding and checkpoint transforms stay
generic and MindFormers' distributed checkpoints keep their meaning. A contiguous row block of [q; k; v] or
[gate; up] does not hold whole heads or matching gate/up rows, so these two layers all-gather their (small) outputs
(``Linear(gather_output=True)``, the redistribution MindFormers' graph inserts) and each rank then takes what it
computes with: its query heads and the KV groups they read (any ``model_parallel`` dividing the heads works, also when
it does not divide the groups: a rank's cache then holds the groups its heads need, shared groups on several ranks),
and its slice of gate and of up. ``dense`` and ``dense_4h_to_h`` are row-parallel over exactly those slices, summed
by an AllReduce. Permuting the weights into per-rank [gate_r; up_r] blocks instead would save the MLP gather, but a
rank's parameter would no longer be a slice any strategy file can describe.
"""
import mindspore as ms
from mindspore import nn, ops

from mindkit.models.causal_lm import CachedAttention, CausalLM, StagedLayers, StepInputs
from mindkit.models.glm2_config import ChatGLM2Config
from mindkit.models.layers import Embedding, Linear, RMSNorm, cast, inference_kernel, ms_dtype, rope_tables
from mindkit.ops import decode_kernels
from mindkit.parallel.pipeline import PipelineStage
from mindkit.parallel.tensor_parallel import TPGroup
from mindkit.registry import register

ROPE_BASE = 10000.0


def _norm(cfg):
    return dict(eps=cfg.layernorm_epsilon, param_init_type=cfg.param_init_type,
                compute_type=cfg.layernorm_compute_type)


class ChatGLM2SelfAttention(nn.Cell):
    def __init__(self, cfg: ChatGLM2Config, tp=TPGroup()):
        super().__init__()
        H, G, hd = cfg.num_attention_heads, cfg.kv_groups, cfg.kv_channels
        self.heads, self.hd = tp.local(H, "num_attention_heads"), hd
        first = tp.rank * self.heads
        group = [h * G // H for h in range(first, first + self.heads)]   # the KV group each of this rank's heads reads
        g0, self.n_kv = group[0], group[-1] - group[0] + 1
        self.q_cols = (first * hd, (first + self.heads) * hd)
        self.k_cols = ((H + g0) * hd, (H + g0 + self.n_kv) * hd)
        self.v_cols = ((H + G + g0) * hd, (H + G + g0 + self.n_kv) * hd)
        local = [g - g0 for g in group]
        equal = self.heads % self.n_kv == 0 and local == [i * self.n_kv // self.heads for i in range(self.heads)]
        lin = dict(param_init_type=cfg.param_init_type, compute_dtype=cfg.compute_dtype, tp=tp)
        self.query_key_value = Linear(cfg.hidden_size, (H + 2 * G) * hd, split_axis=0, gather_output=True,
                                      has_bias=cfg.add_qkv_bias or cfg.add_bias_linear, **lin)
        self.dense = Linear(H * hd, cfg.hidden_size, split_axis=1, has_bias=cfg.add_bias_linear, **lin)
        self.core = CachedAttention(self.heads, self.n_kv, hd, cfg.softmax_compute_type, cfg.compute_dtype,
                                    None if equal else local, rotary_dim=hd // 2, interleaved=True)

    def construct(self, x, cos, sin, mask, cache, start, residual=None):
        """``residual``: what the output projection adds its result to (see Linear)."""
        B, L, _ = x.shape
        qkv = self.query_key_value(x)                       # (B, L, (H + 2G) * hd): every rank's whole output
        q = qkv[:, :, self.q_cols[0]:self.q_cols[1]]
        k = qkv[:, :, self.k_cols[0]:self.k_cols[1]].reshape(B, L, self.n_kv, self.hd)
        v = qkv[:, :, self.v_cols[0]:self.v_cols[1]].reshape(B, L, self.n_kv, self.hd)
        return self.core(q, k, v, cos, sin, mask, cache, start, self.dense, residual)


class ChatGLM2MLP(nn.Cell):
    """dense_4h_to_h(silu(gate) * up) with [gate; up] = dense_h_to_4h(x); the activation in float32 as MindFormers."""

    def __init__(self, cfg: ChatGLM2Config, tp=TPGroup()):
        super().__init__()
        full, ffn = cfg.ffn_hidden_size, tp.local(cfg.ffn_hidden_size, "ffn_hidden_size")
        self.gate_cols = (tp.rank * ffn, (tp.rank + 1) * ffn)
        self.up_cols = (full + tp.rank * ffn, full + (tp.rank + 1) * ffn)
        lin = dict(param_init_type=cfg.param_init_type, compute_dtype=cfg.compute_dtype, tp=tp,
                   has_bias=cfg.add_bias_linear)
        self.dense_h_to_4h = Linear(cfg.hidden_size, 2 * full, split_axis=0, gather_output=True, **lin)
        self.dense_4h_to_h = Linear(full, cfg.hidden_size, split_axis=1, **lin)
        self.act = decode_kernels.silu_mul()

    def construct(self, x, residual=None):
        y = self.dense_h_to_4h(x)
        gate = cast(y[..., self.gate_cols[0]:self.gate_cols[1]], ms.float32)
        up = cast(y[..., self.up_cols[0]:self.up_cols[1]], ms.float32)
        act = self.act(gate, up) if inference_kernel(self.act, self.training, gate) else ops.silu(gate) * up
        return self.dense_4h_to_h(cast(act, y.dtype), residual)


class ChatGLM2Block(nn.Cell):
    def __init__(self, cfg: ChatGLM2Config, tp=TPGroup()):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, **_norm(cfg))
        self.self_attention = ChatGLM2SelfAttention(cfg, tp)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, **_norm(cfg))
        self.mlp = ChatGLM2MLP(cfg, tp)

    def construct(self, x, cos, sin, mask, cache, start):
        h = self.self_attention(self.input_layernorm(x), cos, sin, mask, cache, start, x)
        return self.mlp(self.post_attention_layernorm(h), h)


class ChatGLM2Transformer(StagedLayers):
    """``encoder``: the layers of this pipeline stage and, on the last, ``final_layernorm``."""

    def __init__(self, cfg: ChatGLM2Config, tp=TPGroup(), stage=PipelineStage()):
        super().__init__()
        self.build_layers(cfg.num_layers, lambda i: ChatGLM2Block(cfg, tp), stage)
        if stage.last:
            self.final_layernorm = RMSNorm(cfg.hidden_size, **_norm(cfg))

    def construct(self, h, cos, sin, mask, caches, start):
        h = self.run_layers(h, cos, sin, mask, caches, start)
        return self.final_layernorm(h) if self.last else h


class ChatGLM2Model(nn.Cell):
    """``transformer``: the embedding (first stage), the encoder, the output layer (last stage)."""

    def __init__(self, cfg: ChatGLM2Config, tp=TPGroup(), stage=PipelineStage()):
        super().__init__()
        self.first, self.hidden = stage.first, cfg.hidden_size
        if stage.first:
            self.embedding = Embedding(cfg.padded_vocab_size, cfg.hidden_size, cfg.param_init_type, tp=tp)
        self.encoder = ChatGLM2Transformer(cfg, tp, stage)
        if stage.last:
            self.output_layer = Linear(cfg.hidden_size, cfg.padded_vocab_size, cfg.param_init_type,
                                       cfg.compute_dtype, split_axis=0, tp=tp)
        tables = rope_tables(cfg.kv_channels, cfg.seq_length, ROPE_BASE * cfg.rope_ratio,
                             rotary_dim=cfg.kv_channels // 2, interleaved=True)
        self.inputs = StepInputs(tables, cfg.rotary_dtype, cfg.compute_dtype)
        self.compute_dtype = ms_dtype(cfg.compute_dtype)

    def construct(self, input_ids, positions, key_valid, start, caches):
        B, L = input_ids.shape
        mask, cos, sin = self.inputs(positions, key_valid, start)
        if self.first:
            h = cast(self.embedding(input_ids), self.compute_dtype)
        else:
            h = ops.zeros((B, L, self.hidden), self.compute_dtype)
        return self.encoder(h, cos, sin, mask, caches, start)


@register("model")
class ChatGLM2ForConditionalGeneration(CausalLM):
    head_name = "transformer.output_layer"
    layer_names = r"transformer\.encoder\.layers\.(\d+)\."
    stage_names = ("transformer.embedding.", "transformer.encoder.final_layernorm.", "transformer.output_layer.")

    def __init__(self, config: ChatGLM2Config, tp=TPGroup(), stage=PipelineStage()):
        super().__init__(config, tp, stage)
        self.transformer = ChatGLM2Model(config, tp, stage)
        self.describe_cache(self.transformer.encoder)

    def hidden_states(self, input_ids, positions, key_valid, start, caches):
        return self.transformer(input_ids, positions, key_valid, start, caches)

    def head_weight(self):
        return self.transformer.output_layer.weight
