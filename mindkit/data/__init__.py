from mindkit.data.adgen import ADGenDataLoader
from mindkit.data.batching import Batcher
from mindkit.data.build import Dataset, DatasetConfig, build_dataset
from mindkit.data.causal_lm import TextDataLoader
from mindkit.data.keyword_gen import KeyWordGenDataset

__all__ = ["ADGenDataLoader", "Batcher", "Dataset", "DatasetConfig", "KeyWordGenDataset", "TextDataLoader",
           "build_dataset"]
