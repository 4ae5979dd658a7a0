"""The tensor-parallel group a layer splits its weight over, and the two collectives its layers need.

A group of one (the default) makes every parallel layer an ordinary layer: no communication, full weights.
"""
import dataclasses

from mindspore import ops


@dataclasses.dataclass(frozen=True)
class TPGroup:
    size: int = 1
    rank: int = 0

    def all_reduce(self):
        """Sum over the group (row-parallel outputs, vocab-split lookups); identity for one rank."""
        return ops.AllReduce() if self.size > 1 else None

    def all_gather(self):
        """Concatenate along axis 0 over the group; identity for one rank."""
        return ops.AllGather() if self.size > 1 else None

    def local(self, full, what, key="parallel_config.model_parallel"):
        """This rank's share of ``full`` units (heads, rows); they must divide evenly."""
        if full % self.size:
            from mindkit.errors import ConfigError
            raise ConfigError(key, self.size, f"a divisor of {what} ({full})")
        return full // self.size
