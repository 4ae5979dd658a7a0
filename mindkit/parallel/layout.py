"""Each parameter's tensor-parallel layout, read from the layers that declare it (ARCHITECTURE principle 1):
full shapes for checking checkpoints, and this rank's slice of a full weight."""
import numpy as np

from mindkit.models.layers import ParallelLayout
from mindkit.parallel.tensor_parallel import TPGroup

REPLICATED = (None, TPGroup())


def param_layouts(model):
    """parameter name -> (split_axis, tp group), as each parallel layer declares per parameter
    (``ParallelLayout.param_split_axes``); parameters outside parallel layers are replicated."""
    layouts = {}
    for _, cell in model.cells_and_names():
        if isinstance(cell, ParallelLayout):
            axes = cell.param_split_axes()
            for local, p in cell.parameters_and_names(expand=False):
                axis = axes.get(local)
                layouts[p.name] = (axis, cell.tp) if axis is not None else REPLICATED
    return {p.name: layouts.get(p.name, REPLICATED) for p in model.get_parameters()}


def full_shapes(model):
    """parameter name -> the shape of the whole (unsplit) weight, as a checkpoint stores it."""
    out = {}
    for p, (axis, tp) in zip(model.get_parameters(), param_layouts(model).values()):
        shape = list(p.shape)
        if axis is not None:
            shape[axis] *= tp.size
        out[p.name] = tuple(shape)
    return out


def shard(full, axis, tp):
    """This rank's slice of a full weight along ``axis``."""
    if axis is None or tp.size == 1:
        return full
    return np.split(full, tp.size, axis=axis)[tp.rank]
