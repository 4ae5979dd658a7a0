"""Mesh coordinates and pipeline stage splits (pure logic; the real multi-process runs are in test_launcher.py)."""
import pytest

from mindkit.errors import ConfigError
from mindkit.parallel.mesh import Mesh
from mindkit.parallel.pipeline import PipelineStage, stage_layer_counts


def test_mesh_is_stage_major_with_model_parallel_ranks_adjacent():
    # MindSpore's checkpoint transforms take stage s to hold ranks s * stage_size ... (s + 1) * stage_size - 1
    coords = [(m.pp_rank, m.dp_rank, m.mp_rank) for m in (Mesh(r, 8, 2, 2, 2) for r in range(8))]
    assert coords == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)]


@pytest.mark.parametrize("layers,stages,offset,counts", [
    (8, 2, 0, [4, 4]), (10, 4, 0, [2, 2, 3, 3]), (10, [2, 2, 3, 3], 0, [2, 2, 3, 3]), (4, [1, 3], 0, [1, 3]),
    (8, 2, [1, -1], [5, 3]), (30, 2, 0, [15, 15])])
def test_stage_layer_counts(layers, stages, offset, counts):
    assert stage_layer_counts(layers, stages, offset) == counts


@pytest.mark.parametrize("layers,stages,offset,key", [(4, [1, 2], 0, "pipeline_stage"), (4, [0, 4], 0, "pipeline_stage"),
                                                      (4, 2, [2, 2], "offset"), (4, 2, [1], "offset")])
def test_bad_stage_splits_name_the_key(layers, stages, offset, key):
    with pytest.raises(ConfigError, match=key):
        stage_layer_counts(layers, stages, offset)


def test_pipeline_stage_layer_ranges():
    stages = [PipelineStage(4, r, (2, 2, 3, 3)) for r in range(4)]
    assert [list(s.layers) for s in stages] == [[0, 1], [2, 3], [4, 5, 6], [7, 8, 9]]
    assert stages[0].first and not stages[0].last and stages[3].last
