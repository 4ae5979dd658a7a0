"""The causal-LM loss over a full sequence (no KV cache), summed, so callers can normalize by the token count of a
whole global batch: accumulation steps and data-parallel ranks then add up to exactly the single-process loss."""
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

IGNORE = -100


class NoCache:
    """Stands in for a layer's KV cache in a full-sequence pass: keys and values are used as computed."""
    whole = False  # no cache for a fused attention kernel to write into

    def write(self, k, v, start):
        return k, v


def count_targets(labels):
    """Tokens that carry loss in a (B, L) label batch: every label after the first position that is not IGNORE."""
    return int((np.asarray(labels)[:, 1:] != IGNORE).sum())


class CausalLMLoss(nn.Cell):
    """sum over positions t of cross_entropy(logits[t], labels[t + 1]), ignoring IGNORE labels; padding (labels
    IGNORE, and masked out as keys) never changes the result of real tokens."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)  # the model's parameter names stay its checkpoint names
        self.model = model
        self.caches = [NoCache() for _ in range(model.cache_layers)]

    def construct(self, input_ids, labels, key_valid):
        B, L = input_ids.shape
        positions = ops.tile(ops.arange(L, dtype=ms.int32).reshape(1, L), (B, 1))
        logits = self.model(input_ids, positions, key_valid, 0, self.caches, last_only=False)
        logits = logits[:, :-1].reshape(B * (L - 1), -1).astype(ms.float32)
        return ops.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum")


def batch_tensors(batch, pad_token_id):
    """(input_ids, labels, key_valid) tensors from a numpy batch dict; key_valid marks non-pad positions."""
    ids = np.asarray(batch["input_ids"], np.int32)
    valid = batch.get("attention_mask")
    valid = np.asarray(valid, np.bool_) if valid is not None else ids != pad_token_id
    return Tensor(ids), Tensor(np.asarray(batch["labels"], np.int32)), Tensor(valid)
