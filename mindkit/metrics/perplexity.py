"""``PerplexityMetric``: the mean token loss of labelled text and its exponential. It is fed losses, not text, so
the eval runner scores it from the model's loss (``input_kind = "loss"``) instead of generating answers."""
import math
import numbers

import numpy as np

from mindkit.errors import InputError
from mindkit.registry import register


@register("metric")
class PerplexityMetric:
    """``eval() -> {"loss": mean token loss, "PPL": exp(loss)}`` over everything given since ``clear()``.

    ``update`` takes either form, once per batch:

    - ``update(loss_sum: float, tokens: int)``: the cross-entropy (nats) summed over ``tokens`` predicted tokens --
      what the eval runner passes. The mean is over tokens, not batches, so uneven batches weigh correctly.
    - ``update(token_losses)``: a 1-D sequence (list, numpy array, Tensor) of per-token losses.
    """
    input_kind = "loss"

    def __init__(self):
        self.clear()

    def clear(self):
        self.loss_sum, self.tokens = 0.0, 0

    def update(self, loss_sum, tokens=None):
        if tokens is None:
            loss_sum, tokens = self._from_token_losses(loss_sum)
        if isinstance(tokens, bool) or not isinstance(tokens, numbers.Integral) or tokens < 0:
            raise InputError("PerplexityMetric.update", tokens, "a token count: an int >= 0")
        if isinstance(loss_sum, bool) or not isinstance(loss_sum, numbers.Real) or not math.isfinite(loss_sum):
            raise InputError("PerplexityMetric.update", loss_sum, "a finite summed loss (float)")
        if tokens == 0 and loss_sum != 0:
            raise InputError("PerplexityMetric.update", f"loss_sum {loss_sum} over 0 tokens",
                             "a zero loss for zero tokens")
        self.loss_sum += float(loss_sum)
        self.tokens += int(tokens)

    @staticmethod
    def _from_token_losses(losses):
        if isinstance(losses, numbers.Number):
            raise InputError("PerplexityMetric.update", losses,
                             "update(loss_sum, tokens) or update(token_losses) with a sequence of per-token losses")
        values = np.asarray(losses.asnumpy() if hasattr(losses, "asnumpy") else losses, dtype=np.float64).ravel()
        if not np.isfinite(values).all():
            raise InputError("PerplexityMetric.update", "a non-finite per-token loss", "finite losses")
        return float(values.sum()), int(values.size)

    def eval(self):
        if not self.tokens:
            raise InputError("PerplexityMetric.eval", "0 scored tokens", "update() with at least one token first")
        loss = self.loss_sum / self.tokens
        return {"loss": loss, "PPL": math.exp(loss) if loss < 709 else math.inf}  # exp overflows a float past ~709
