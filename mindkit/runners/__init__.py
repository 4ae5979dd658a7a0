from mindkit.runners.predict import PredictRunner

__all__ = ["PredictRunner"]
