"""This run's layout as a MindSpore strategy file, derived from the layers' declarations (never written per model).

Format: ``ParallelStrategyMap`` protobuf (``mindspore.train.node_strategy_pb2``) or the equivalent JSON, readable by
``mindspore.build_searched_strategy`` and usable as ``dst_strategy_file`` in ``mindspore.transform_checkpoints``.
The device matrix is ``[data_parallel, model_parallel]`` (the devices of one pipeline stage); ``tensor_map`` entries
index it from the right, so a weight split by model parallelism along an axis maps that axis to 0, and replicated axes
are -1. Each file also records its pipeline stage (a ``parallel_strategy_item``), which
``mindspore.merge_pipeline_strategys`` needs to merge the stages of a pipeline into one file.
"""
import json
import logging
import os

from mindkit.checkpoint.fused import match_names
from mindkit.parallel.layout import full_shapes, param_layouts

logger = logging.getLogger("mindkit")
STAGE_NODE = "mindkit_pipeline_stage"  # the strategy item that carries a file's stage


def layout_items(model, mesh):
    """parameter name -> the JSON form of its ParallelLayouts."""
    shapes = full_shapes(model)
    items = {}
    for name, (axis, tp) in param_layouts(model).items():
        tensor_map = [-1] * len(shapes[name])
        if axis is not None and tp.size > 1:
            tensor_map[axis] = 0
        items[name] = {"dev_matrix": [mesh.data_parallel, mesh.model_parallel], "tensor_map": tensor_map,
                       "param_split_shape": [], "indices_offset": [], "field": 0, "opt_weight_shard_step": 0,
                       "opt_weight_shard_size": 0}
    return items


def write_strategy(items, path, stage=0):
    """Write ``items`` (of pipeline ``stage``) as JSON when ``path`` ends in .json, else as MindSpore's protobuf."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if os.path.exists(path):
        logger.info("replacing the previous %s", path)
    if path.endswith(".json"):
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"current_stage": stage, "parallel_layout_item": items,
                       "parallel_strategy_item": {STAGE_NODE: {"stage": stage, "parallel_strategy": []}}}, f, indent=1)
        return path
    from mindspore.train import node_strategy_pb2
    strategy = node_strategy_pb2.ParallelStrategyMap(current_stage=stage)
    strategy.parallel_strategy_item.add(node_name=STAGE_NODE).parallel_strategys.stage = stage
    for name, item in items.items():
        layouts = strategy.parallel_layout_item.add(param_name=name).parallel_layouts
        layouts.dev_matrix.add().dim.extend(item["dev_matrix"])
        layouts.tensor_map.add().dim.extend(item["tensor_map"])
        layouts.param_split_shape.add().dim.extend(item["param_split_shape"])
        layouts.indices_offset.add().dim.extend(item["indices_offset"])
        layouts.field, layouts.opt_weight_shard_step = item["field"], item["opt_weight_shard_step"]
        layouts.opt_weight_shard_size = item["opt_weight_shard_size"]
    with open(path, "wb") as f:
        f.write(strategy.SerializeToString())
    return path


def save_run_strategy(model, mesh, output_dir, fmt="ckpt"):
    """``{output_dir}/strategy/ckpt_strategy_rank_{rank}.{ckpt|json}`` for this rank: the parameters it holds."""
    path = os.path.join(output_dir, "strategy", f"ckpt_strategy_rank_{mesh.rank}.{fmt}")
    write_strategy(layout_items(model, mesh), path, stage=mesh.pp_rank)
    logger.info("strategy written to %s", path)
    return path


def derive_strategy(config, parallel, folder, fmt="ckpt", names=None):
    """The strategy file of a whole layout (``parallel``: a ParallelConfig), derived from the model definition of
    ``config`` alone: one file per pipeline stage in ``folder/stages/``, merged by MindSpore into
    ``folder/strategy.{fmt}`` when there are several. Models are built without weights (shapes only), so this is
    cheap even for models far larger than memory. ``names`` (a checkpoint's parameter names) renames fused/separate
    projections to the checkpoint's form. Returns the path to pass to ``mindspore.transform_checkpoints``."""
    import copy
    import mindspore as ms
    from mindkit.parallel.mesh import Mesh
    from mindkit.runners.build import build_model
    run = copy.copy(config)
    run.parallel_config, run.use_parallel = parallel, True
    dp, mp, pp = parallel.data_parallel, parallel.model_parallel, parallel.stages
    stage_files = []
    for stage in range(pp):
        mesh = Mesh(stage * dp * mp, dp * mp * pp, dp, mp, pp)
        items = layout_items(build_model(run, load=False, mesh=mesh), mesh)
        if names is not None:
            items = match_names(items, names)
        stage_files.append(write_strategy(items, os.path.join(folder, "stages", f"stage_{stage}.{fmt}"), stage))
    if pp == 1:
        return stage_files[0]
    merged = os.path.join(folder, f"strategy.{fmt}")
    ms.merge_pipeline_strategys(os.path.join(folder, "stages"), merged)
    return merged
