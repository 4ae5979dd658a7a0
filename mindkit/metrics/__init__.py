"""Evaluation metrics by their MindFormers names: ``clear()``, ``update(...)``, ``eval() -> dict``."""
from mindkit.metrics.adgen import ADGENMetric
from mindkit.metrics.emf1 import EmF1Metric
from mindkit.metrics.perplexity import PerplexityMetric

__all__ = ["ADGENMetric", "EmF1Metric", "PerplexityMetric"]
