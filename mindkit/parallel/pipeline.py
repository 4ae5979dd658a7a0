"""Pipeline stages: which consecutive layers this process runs, and how activations reach the next stage.

Layer counts per stage are even by default (extra layers go to the last stages), or given as a list
(``parallel_config.pipeline_stage: [2, 2, 3, 3]``, as Yuan's checkpoints use), or MindFormers' ``offset`` (per-stage
additions to the even split). Activations move between stages with ``mindkit.models.causal_lm.Handoff``.
"""
import dataclasses

from mindkit.errors import ConfigError


def stage_layer_counts(num_layers, stages, offset=0):
    """Layers per stage from ``pipeline_stage`` (an int or a list of counts) and MindFormers' ``offset``."""
    if isinstance(stages, (list, tuple)):
        counts = list(stages)
        if any(c < 1 for c in counts) or sum(counts) != num_layers:
            raise ConfigError("parallel_config.pipeline_stage", counts,
                              f"layer counts >= 1 per stage adding up to num_layers ({num_layers})")
        return counts
    base, extra = divmod(num_layers, stages)
    counts = [base + (1 if i >= stages - extra else 0) for i in range(stages)]
    offsets = offset if isinstance(offset, (list, tuple)) else [offset] * stages
    if len(offsets) != stages:
        raise ConfigError("model.model_config.offset", offset, f"a number or a list of {stages} numbers")
    counts = [c + o for c, o in zip(counts, offsets)]
    if any(c < 1 for c in counts) or sum(counts) != num_layers:
        raise ConfigError("model.model_config.offset", offset,
                          f"per-stage additions keeping >= 1 layer per stage and {num_layers} in all")
    return counts


@dataclasses.dataclass(frozen=True)
class PipelineStage:
    size: int = 1              # number of stages
    rank: int = 0              # this process's stage
    counts: tuple = ()         # layers per stage

    @property
    def layers(self):
        start = sum(self.counts[:self.rank])
        return range(start, start + self.counts[self.rank]) if self.counts else None

    @property
    def first(self):
        return self.rank == 0

    @property
    def last(self):
        return self.rank == self.size - 1
