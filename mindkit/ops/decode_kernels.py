"""The fused kernels of decode_kernels.cc as MindSpore ops, or None where they cannot run.

A layer asks for a kernel when it is built and keeps its plain-MindSpore path for everything the kernel does not
cover (training, other dtypes, other backends, ``MINDKIT_KERNELS=0``, and for the few-row kernels, prefill: see
layers.decode_kernel); both paths compute the same float32 math.
"""
import mindspore as ms

from mindkit.ops.aot import custom_op, library

SOURCE = "decode_kernels.cc"


def _op(symbol, out_shape):
    lib = library(SOURCE)
    return None if lib is None else custom_op(lib, symbol, out_shape, lambda *dtypes: ms.float32)


def matmul_t():
    """(x (M, K), w (N, K)[, residual (M, N)]) -> x @ w^T (+ residual) (M, N), threaded over N; for the few rows of
    a decode step."""
    return _op("MatMulT", lambda x, w, *residual: [x[0], w[0]])


def rms_norm():
    """(x (..., D), weight (D,), eps (1,)) -> (..., D)."""
    return _op("RmsNorm", lambda x, w, eps: x)


def silu_mul():
    """(gate, up) -> silu(gate) * up."""
    return _op("SiluMul", lambda gate, up: gate)


def silu_mul_pairs():
    """(gu (..., 2F) with gate and up interleaved) -> (..., F)."""
    return _op("SiluMulPairs", lambda gu: list(gu[:-1]) + [gu[-1] // 2])


def cached_attention():
    """(q (B, L, H, hd), k (B, L, G, hd), v (B, L, G, hd), cos (B, L, hd), sin (B, L, hd), partner (hd,) int32,
    sign (hd,), k_cache (B, G, S, hd), v_cache, mask (B, L, S), start () int32) -> (B, L, H * hd); writes the new
    tokens' keys and values into the caches from slot ``start`` on. A fused projection's (B, L, G, H / G + 2, hd)
    may be passed as q, k and v. With the output projection's wo (N, H * hd) and a residual (B, L, N) after
    ``start``: -> (B, L, N), attention's output @ wo^T + residual."""
    def out_shape(q, *rest):
        if len(rest) == 12:
            return [q[0], q[1], rest[10][0]]
        return [q[0], q[1], q[2] * (q[3] - 2) * q[4] if len(q) == 5 else q[2] * q[3]]
    return _op("CachedAttention", out_shape)


def attention_block():
    """(x (B, L, D), norm weight (D,), eps (1,), w_qkv (G (rep + 2) hd, D) | wq, wk, wv, cos, sin, partner, sign,
    k_cache, v_cache, mask, start (as cached_attention), wo (N, G rep hd), residual (B, L, N)) -> (B, L, N):
    residual + wo(attention(RMSNorm(x))), a decode step's attention block in one launch."""
    return _op("AttentionBlock", lambda x, *rest: [x[0], x[1], rest[-2][0]])


def feed_forward():
    """(x (..., D), norm weight (D,), eps (1,), w13 (2F, D) with gate/up rows interleaved | w1 (F, D), w3 (F, D),
    w2 (D, F), residual (..., D)) -> residual + w2(silu(gate) * up) of RMSNorm(x): a decode step's FFN block in one
    launch."""
    return _op("FeedForward", lambda x, *rest: x)


def decoder_layer():
    """(attention_block's inputs, then feed_forward's weights (norm weight, eps, w13 | w1, w3, w2)) -> (B, L, D):
    h = attention_block(x, ..., residual x), then feed_forward(h, ..., residual h), a decode step's pre-norm
    decoder layer in one launch."""
    return _op("DecoderLayer", lambda x, *rest: x)


if __name__ == "__main__":
    ms.set_device("CPU")
    print(library(SOURCE) or "not built: plain MindSpore ops will be used")
