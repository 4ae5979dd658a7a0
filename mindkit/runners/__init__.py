from mindkit.runners.finetune import FinetuneRunner
from mindkit.runners.predict import PredictRunner

__all__ = ["FinetuneRunner", "PredictRunner"]
