"""Keys MindFormers' dataset sections carry for its ``mindspore.dataset`` pipeline.

mindkit batches in plain numpy, so these have no effect here; they are accepted silently so MindFormers YAMLs load
as they are. Any other key a dataset section does not know is named in a warning (a typo shows up there).

Accepted and ignored: num_parallel_workers, python_multiprocessing, prefetch_size, numa_enable, repeat,
input_columns, output_columns, column_names, tokenizer (the run's ``processor.tokenizer`` is used), num_shards,
shard_id (sharding follows ``parallel_config.data_parallel``), version, auto_tune, filepath_prefix,
autotune_per_step, profile.
"""
from mindkit.config.schema import warn_unused

PIPELINE_KEYS = frozenset({
    "num_parallel_workers", "python_multiprocessing", "prefetch_size", "numa_enable", "repeat", "input_columns",
    "output_columns", "column_names", "tokenizer", "num_shards", "shard_id", "version", "auto_tune",
    "filepath_prefix", "autotune_per_step", "profile",
})


def without_pipeline_keys(mapping):
    return {k: v for k, v in mapping.items() if k not in PIPELINE_KEYS}


def warn_unknown(key, kwargs):
    """Warn about leftover constructor keys that are not pipeline keys."""
    warn_unused(key, without_pipeline_keys(kwargs))
