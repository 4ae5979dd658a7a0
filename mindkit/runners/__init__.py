from mindkit.runners.eval import EvalRunner
from mindkit.runners.finetune import FinetuneRunner
from mindkit.runners.predict import PredictRunner
from mindkit.runners.serve import ServeRunner

__all__ = ["EvalRunner", "FinetuneRunner", "PredictRunner", "ServeRunner"]
