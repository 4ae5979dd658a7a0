"""Epochs of numpy batches: a deterministic shuffle per (seed, epoch), ``num_samples``, ``drop_remainder``,
data-parallel shards, and starting mid-epoch — what exact resume needs.

``batch_size`` is per data-parallel rank; the global batch is ``batch_size x data_parallel``. Every rank computes
the same global batches (same seed, same epoch order) and takes its contiguous slice of each, so a data-parallel
run sees exactly the global batches of one process with ``batch_size x data_parallel``. A last, partial global batch
(``drop_remainder: False``) is split as evenly as possible; if it is too small to give every rank a sample, it is
dropped on every rank alike (a rank without data would stall the gradient all-reduce).
"""
import dataclasses
import logging
import typing

import numpy as np

from mindkit.errors import InputError

logger = logging.getLogger("mindkit")


def choose_samples(count, num_samples, shuffle, seed):
    """Indices of the records a run uses, in file order: all, or the first ``num_samples`` of the seed's shuffle
    (of file order without shuffle) — a fixed subset, the same in every epoch."""
    if not num_samples or num_samples >= count:
        return np.arange(count)
    order = np.random.default_rng([seed]).permutation(count) if shuffle else np.arange(count)
    return np.sort(order[:num_samples])


@dataclasses.dataclass
class Batcher:
    items: typing.Sequence        # per-sample dicts of same-shape numpy arrays
    batch_size: int = 1           # per data-parallel rank
    shuffle: bool = False
    seed: int = 0
    drop_remainder: bool = True
    data_parallel: int = 1
    rank: int = 0
    key: str = "train_dataset"    # for messages

    def __post_init__(self):
        if not 0 <= self.rank < self.data_parallel:
            raise ValueError(f"rank {self.rank} outside data_parallel {self.data_parallel}")
        rest = len(self.items) % self.global_batch
        if rest and not self.drop_remainder and rest < self.data_parallel:
            logger.warning("%s: the last %d sample(s) cannot give each of %d data-parallel ranks one; they are "
                           "left out of every epoch", self.key, rest, self.data_parallel)

    @property
    def global_batch(self):
        return self.batch_size * self.data_parallel

    @property
    def num_batches(self):
        """Batches per epoch (the same on every rank)."""
        full, rest = divmod(len(self.items), self.global_batch)
        return full + int(bool(rest) and not self.drop_remainder and rest >= self.data_parallel)

    def shard(self, rank, world):
        """This dataset as rank ``rank`` of ``world`` data-parallel ranks sees it (per-rank batch_size kept)."""
        return dataclasses.replace(self, rank=rank, data_parallel=world)

    def order(self, epoch):
        """Sample order of ``epoch``: a permutation fixed by (seed, epoch), or file order without shuffle."""
        if not self.shuffle:
            return np.arange(len(self.items))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.items))

    def rank_indices(self, order, step):
        chosen = order[step * self.global_batch:(step + 1) * self.global_batch]
        return np.array_split(chosen, self.data_parallel)[self.rank]

    def batches(self, epoch, start=0):
        """This rank's batches of ``epoch`` from step ``start`` on: {name: array (batch, ...)}."""
        if not 0 <= start <= self.num_batches:
            raise InputError(f"{self.key} (resume)", f"step {start} of epoch {epoch}",
                             f"a step within the epoch's {self.num_batches} batches",
                             hint="has the dataset or batch size changed since the checkpoint?")
        return self._iterate(self.order(epoch), start)  # checked now, not at the first batch

    def _iterate(self, order, start):
        for step in range(start, self.num_batches):
            share = self.rank_indices(order, step)
            yield {k: np.stack([self.items[i][k] for i in share]) for k in self.items[share[0]]}
