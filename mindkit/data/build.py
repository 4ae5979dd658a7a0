"""``train_dataset`` / ``eval_dataset`` (and ``train_dataset_task`` / ``eval_dataset_task``) sections, shaped as in
MindFormers YAMLs, to a ``Dataset`` of numpy batches.

The section is ``{name}_task.dataset_config`` with ``{name}`` merged over it (``data_loader`` merged key by key), so
the usual ``&train_dataset`` / ``*train_dataset`` pair works and overrides of ``{name}.*`` always apply.
``{name}_task.type``: ``KeyWordGenDataset`` (prompt/answer records: ADGenDataLoader) or
``CausalLanguageModelDataset`` (token blocks: TextDataLoader); unset, it follows the loader.

Keys read: ``data_loader.{type, dataset_dir, shuffle, phase, origin_columns}`` (ADGenDataLoader),
``data_loader.{type, dataset_dir, shuffle, document_per_line, token_dtype}`` (TextDataLoader),
``max_source_length``, ``max_target_length``, ``ignore_pad_token_for_loss``, ``prompt_template`` (mindkit's:
text holding ``{content}``), ``batch_size`` (per data-parallel rank; default ``runner_config.batch_size``),
``drop_remainder``, ``seed`` (default the run's ``seed``), ``num_samples`` (the first N records after the seed's
shuffle). MindFormers' ``mindspore.dataset`` pipeline keys are accepted and ignored (see pipeline_keys.py):
num_parallel_workers, python_multiprocessing, prefetch_size, numa_enable, repeat, input_columns, output_columns,
column_names, tokenizer, num_shards, shard_id, version, auto_tune, filepath_prefix, autotune_per_step, profile.

Batches: dicts of int32 arrays ``input_ids``, ``labels``, ``attention_mask``, each (batch, length) with length
``max_source_length + max_target_length + 1`` (KeyWordGen) or ``seq_length`` (token blocks).
"""
import dataclasses
from typing import Optional

import numpy as np

from mindkit import registry
from mindkit.config.schema import Section, check_positive
from mindkit.data.batching import Batcher, choose_samples
from mindkit.data.causal_lm import pack_blocks
from mindkit.data.keyword_gen import KeyWordGenDataset
from mindkit.data.pipeline_keys import without_pipeline_keys
from mindkit.errors import ConfigError, InputError

TASKS = {"KeyWordGenDataset": "records", "CausalLanguageModelDataset": "tokens"}


@dataclasses.dataclass
class DatasetConfig(Section):
    data_loader: Optional[dict] = None
    batch_size: Optional[int] = None
    drop_remainder: bool = True
    seed: Optional[int] = None
    num_samples: Optional[int] = None
    max_source_length: int = 64
    max_target_length: int = 64
    ignore_pad_token_for_loss: bool = True
    prompt_template: Optional[str] = None

    def validate(self):
        check_positive(self, "batch_size", "num_samples")
        if not isinstance(self.data_loader, dict) or "dataset_dir" not in self.data_loader:
            raise ConfigError(f"{self._key}.data_loader", self.data_loader, "a mapping with type and dataset_dir")


@dataclasses.dataclass
class Dataset:
    batcher: Batcher
    samples: list = None          # KeyWordGen: (prompt ids, reference text) of every record used, in file order

    @property
    def batch_size(self):
        return self.batcher.batch_size

    @property
    def num_batches(self):
        return self.batcher.num_batches

    @property
    def data_parallel(self):
        return self.batcher.data_parallel

    @property
    def rank(self):
        return self.batcher.rank

    def batches(self, epoch, start=0):
        """This rank's batches of ``epoch`` from step ``start`` on (resume: the step after the checkpoint)."""
        return self.batcher.batches(epoch, start)

    def shard(self, rank, world):
        return dataclasses.replace(self, batcher=self.batcher.shard(rank, world))

    def eval_samples(self):
        """This data-parallel rank's contiguous share of the eval samples."""
        shares = np.array_split(np.arange(len(self.samples or [])), self.data_parallel)
        return [self.samples[i] for i in shares[self.rank]]


def dataset_section(config, name):
    """(DatasetConfig, task type or None) from ``{name}`` over ``{name}_task.dataset_config``."""
    task = config.section(f"{name}_task")
    base = task.get("dataset_config") or {}
    top = config.section(name)
    if not isinstance(base, dict):
        raise ConfigError(f"{name}_task.dataset_config", base, "a mapping")
    merged = {**base, **top}
    if isinstance(base.get("data_loader"), dict) and isinstance(top.get("data_loader"), dict):
        merged["data_loader"] = {**base["data_loader"], **top["data_loader"]}
    if not merged:
        raise ConfigError(name, None, f"a {name} section (or {name}_task.dataset_config) with a data_loader")
    kind = task.get("type")
    if kind is not None and kind not in TASKS:
        raise ConfigError(f"{name}_task.type", kind, "one of " + ", ".join(TASKS))
    return DatasetConfig.from_dict(without_pipeline_keys(merged), key=name), kind


def as_processor(processor_or_tokenizer):
    """A processor (prompts encoded as predict does), or a bare tokenizer wrapped as a plain-text one."""
    if hasattr(processor_or_tokenizer, "tokenizer"):
        return processor_or_tokenizer
    from mindkit.tokenizers.processor import TextProcessor
    return TextProcessor(tokenizer=processor_or_tokenizer)


def build_dataset(config, name, processor, seq_length, data_parallel=1, rank=0):
    """The ``name`` ("train_dataset" or "eval_dataset") section of ``config`` as this rank's Dataset.

    ``processor``: the run's processor (or a tokenizer); ``seq_length``: the model's ``model_config.seq_length``."""
    section, kind = dataset_section(config, name)
    processor = as_processor(processor)
    key = f"{name}.data_loader"
    loader = registry.build("dataset", {"type": "ADGenDataLoader", **section.data_loader, "key": key}, key=key)
    has = "records" if hasattr(loader, "samples") else "tokens" if hasattr(loader, "tokens") else None
    if has is None or (kind is not None and TASKS[kind] != has):
        raise ConfigError(f"{key}.type", section.data_loader.get("type", "ADGenDataLoader"),
                          f"a loader of {kind or 'a known task'}: ADGenDataLoader for KeyWordGenDataset, "
                          f"TextDataLoader for CausalLanguageModelDataset")
    seed = config.seed if section.seed is None else section.seed
    shuffle = bool(getattr(loader, "shuffle", False))
    if has == "records":
        task = KeyWordGenDataset(processor, section.max_source_length, section.max_target_length, seq_length,
                                 section.ignore_pad_token_for_loss, section.prompt_template, key=name)
        records = _subset(loader.samples, section, shuffle, seed)
        items, samples = task.build(records)
    else:
        blocks = pack_blocks(loader.tokens(processor.tokenizer), seq_length, f"{key}.dataset_dir", loader.path)
        items, samples = _subset(blocks, section, shuffle, seed), None
    batcher = Batcher(items, section.batch_size or config.runner_config.batch_size, shuffle, seed,
                      section.drop_remainder, data_parallel, rank, key=name)
    if batcher.num_batches == 0:
        raise InputError(f"{name}.batch_size", batcher.batch_size,
                         f"at most {len(items)} // data_parallel ({data_parallel}) to make one batch",
                         hint=f"{len(items)} samples; or set {name}.drop_remainder: False")
    return Dataset(batcher, samples)


def _subset(items, section, shuffle, seed):
    return [items[i] for i in choose_samples(len(items), section.num_samples, shuffle, seed)]
