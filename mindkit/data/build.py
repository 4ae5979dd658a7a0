"""``train_dataset`` / ``eval_dataset`` (and their ``*_task``) sections, MindFormers-shaped, to a Dataset.

Keys read: ``data_loader.{type, dataset_dir, shuffle, phase, origin_columns}``, ``max_source_length``,
``max_target_length``, ``ignore_pad_token_for_loss``, ``batch_size`` (default ``runner_config.batch_size``),
``drop_remainder``, ``seed`` (default the run's), ``num_samples`` (the first N records). Keys of MindSpore's dataset
pipeline are accepted and have no effect here: num_parallel_workers, python_multiprocessing, prefetch_size,
numa_enable, repeat, input_columns, output_columns, tokenizer.
"""
import dataclasses

import numpy as np

from mindkit import registry
from mindkit.data.batching import Batcher
from mindkit.data.keyword_gen import KeyWordGenDataset
from mindkit.errors import ConfigError


@dataclasses.dataclass
class Dataset:
    batcher: Batcher
    samples: list = None          # eval: (prompt ids, reference) for every record, in order
    data_parallel: int = 1
    rank: int = 0

    @property
    def batch_size(self):
        return self.batcher.batch_size

    @property
    def num_batches(self):
        return self.batcher.num_batches

    def batches(self, epoch, start=0):
        return self.batcher.batches(epoch, start)

    def eval_samples(self):
        """This data-parallel rank's contiguous share of the eval records."""
        shares = np.array_split(np.arange(len(self.samples or [])), self.data_parallel)
        return [self.samples[i] for i in shares[self.rank]]


def _sections(config, name):
    """The dataset section: ``{name}_task.dataset_config`` (MindFormers' usual alias of ``{name}``) under ``{name}``
    itself, so overrides of ``{name}.*`` (e.g. ``--train_dataset_dir``) always apply."""
    task = config.section(f"{name}_task")
    base = (task.get("dataset_config") if isinstance(task, dict) else None) or {}
    top = config.section(name)
    section = {**base, **top}
    if isinstance(base.get("data_loader"), dict) and isinstance(top.get("data_loader"), dict):
        section["data_loader"] = {**base["data_loader"], **top["data_loader"]}
    if not isinstance(section, dict) or not isinstance(section.get("data_loader"), dict):
        raise ConfigError(f"{name}.data_loader", section.get("data_loader") if isinstance(section, dict) else section,
                          "a mapping with type and dataset_dir")
    return section, (task or {}).get("type")


def build_dataset(config, name, processor, seq_length, data_parallel=1, rank=0):
    section, task = _sections(config, name)
    loader_section = dict(section["data_loader"])
    loader_section.setdefault("type", "ADGenDataLoader")
    key = f"{name}.data_loader"
    loader = registry.build("dataset", {**loader_section, "key": f"{key}.dataset_dir"}, key=key)
    if hasattr(loader, "samples"):  # prompt/answer records
        records = loader.samples[:section.get("num_samples") or None]
        task = KeyWordGenDataset(records, processor, section.get("max_source_length", 64),
                                 section.get("max_target_length", 64), seq_length,
                                 section.get("ignore_pad_token_for_loss", True), key=name)
        items, samples = task.train_items(), task.eval_samples()
    else:
        items, samples = loader.blocks(processor.tokenizer, seq_length)[:section.get("num_samples") or None], None
    batch = int(section.get("batch_size") or config.runner_config.batch_size)
    batcher = Batcher(items, batch, bool(loader_section.get("shuffle", False)), int(section.get("seed", config.seed)),
                      bool(section.get("drop_remainder", True)), data_parallel, rank)
    return Dataset(batcher, samples, data_parallel, rank)
