"""The device mesh: which replica (data parallel), pipeline stage and tensor-parallel slot this process is.

Ranks are laid out as MindSpore's checkpoint tools number them: stage-major, model-parallel ranks adjacent
(rank = (pp * data_parallel + dp) * model_parallel + mp), so a stage's ranks are contiguous (``rank_N`` folders of a
pipeline checkpoint) and a tensor-parallel group shares a node. A run with ``use_parallel: True`` must be
launched with exactly ``data_parallel * model_parallel * pipeline_stage`` processes (``scripts/msrun_launcher.sh``).
"""
import dataclasses
import os

import numpy as np

from mindkit.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Mesh:
    rank: int = 0
    world_size: int = 1
    data_parallel: int = 1
    model_parallel: int = 1
    pipeline_stage: int = 1

    @property
    def mp_rank(self):
        return self.rank % self.model_parallel

    @property
    def pp_rank(self):
        return self.rank // (self.model_parallel * self.data_parallel)

    @property
    def dp_rank(self):
        return self.rank // self.model_parallel % self.data_parallel

    @property
    def is_main(self):
        return self.rank == 0

    @classmethod
    def from_config(cls, config):
        """Single process unless ``use_parallel``; then join the msrun job and check the mesh fills it."""
        pc = config.parallel_config
        if not config.use_parallel:
            return cls()
        dims = (pc.data_parallel, pc.model_parallel, pc.stages)
        launched = int(os.environ.get("MS_WORKER_NUM", os.environ.get("RANK_SIZE", "1")))
        if launched > 1:
            from mindspore import communication
            communication.init()
            rank, world = communication.get_rank(), communication.get_group_size()
        else:
            rank, world = 0, 1
        if int(np.prod(dims)) != world:
            raise ConfigError("parallel_config", f"data_parallel={dims[0]} x model_parallel={dims[1]} x "
                              f"pipeline_stage={dims[2]} = {int(np.prod(dims))}",
                              f"the number of processes ({world}) when use_parallel is True")
        return cls(rank, world, *dims)
