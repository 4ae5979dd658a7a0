"""``PerplexityMetric``: the mean token loss of labelled text and its exponential."""
import math

from mindkit.errors import InputError
from mindkit.registry import register


@register("metric")
class PerplexityMetric:
    input_kind = "loss"  # fed summed token losses, not generated text

    def __init__(self, **ignored):
        self.clear()

    def clear(self):
        self.loss_sum, self.tokens = 0.0, 0

    def update(self, loss_sum, tokens):
        """``loss_sum``: summed cross-entropy (nats) over ``tokens`` predicted tokens."""
        if tokens < 0 or not math.isfinite(loss_sum):
            raise InputError("PerplexityMetric.update", (loss_sum, tokens), "a finite loss sum and a token count >= 0")
        self.loss_sum += float(loss_sum)
        self.tokens += int(tokens)

    def eval(self):
        loss = self.loss_sum / self.tokens if self.tokens else float("nan")
        return {"loss": loss, "PPL": math.exp(loss) if self.tokens else float("nan")}
