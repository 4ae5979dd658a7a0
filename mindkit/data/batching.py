"""Epochs of numpy batches: a deterministic shuffle per (seed, epoch), ``num_samples``, ``drop_remainder``, data
parallel shards, and starting mid-epoch — what exact resume needs.

A data-parallel run sees the same global batches as one process with ``batch_size x data_parallel``: each rank takes
its contiguous slice of every global batch.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass
class Batcher:
    items: list                   # per-sample dicts of equal-length numpy arrays
    batch_size: int = 1           # per rank
    shuffle: bool = False
    seed: int = 0
    drop_remainder: bool = True
    data_parallel: int = 1
    rank: int = 0

    @property
    def global_batch(self):
        return self.batch_size * self.data_parallel

    @property
    def num_batches(self):
        n = len(self.items) // self.global_batch
        return n if self.drop_remainder or len(self.items) % self.global_batch == 0 else n + 1

    def order(self, epoch):
        if not self.shuffle:
            return np.arange(len(self.items))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.items))

    def batches(self, epoch, start=0):
        """This rank's batches of ``epoch``, from batch ``start`` on."""
        order = self.order(epoch)
        for b in range(start, self.num_batches):
            chosen = order[b * self.global_batch:(b + 1) * self.global_batch]
            share = np.array_split(chosen, self.data_parallel)[self.rank]
            if len(share):
                yield {k: np.stack([self.items[i][k] for i in share]) for k in self.items[share[0]]}
