from mindkit.data.adgen import ADGenDataLoader
from mindkit.data.build import Dataset, build_dataset
from mindkit.data.causal_lm import TextDataLoader

__all__ = ["ADGenDataLoader", "Dataset", "TextDataLoader", "build_dataset"]
