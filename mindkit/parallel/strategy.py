"""This run's layout as a MindSpore strategy file, derived from the layers' declarations (never written per model).

Format: ``ParallelStrategyMap`` protobuf (``mindspore.train.node_strategy_pb2``) or the equivalent JSON, readable by
``mindspore.build_searched_strategy`` and usable as ``dst_strategy_file`` in ``mindspore.transform_checkpoints``.
The device matrix is ``[data_parallel, model_parallel]``; ``tensor_map`` entries index it from the right, so a weight
split by model parallelism along an axis maps that axis to 0, and replicated axes are -1.
"""
import json
import logging
import os

from mindkit.parallel.layout import full_shapes, param_layouts

logger = logging.getLogger("mindkit")


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
            json.dump({"current_stage": stage, "parallel_layout_item": items}, f, indent=1)
        return path
    from mindspore.train import node_strategy_pb2
    strategy = node_strategy_pb2.ParallelStrategyMap(current_stage=stage)
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
