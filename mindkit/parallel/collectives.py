"""Collectives on plain Python data (token-id lists), built on MindSpore's AllGather."""
import numpy as np


def all_gather_token_lists(local, mesh):
    """Every rank passes its list of token-id lists; every rank gets them all, as a list per rank in rank order."""
    if mesh.world_size == 1:
        return [local]
    from mindspore import Tensor, ops
    gather = ops.AllGather()
    longest = max((len(x) for x in local), default=0)
    sizes = gather(Tensor(np.array([[len(local), longest]], np.int32))).asnumpy()
    rows, width = max(int(sizes[:, 0].max()), 1), int(sizes[:, 1].max()) + 1
    buf = np.full((rows, width), -1, np.int32)
    for i, ids in enumerate(local):
        buf[i, 0], buf[i, 1:1 + len(ids)] = len(ids), ids
    everything = gather(Tensor(buf)).asnumpy().reshape(mesh.world_size, rows, width)
    return [[row[1:1 + row[0]].tolist() for row in part[:n]] for part, n in zip(everything, sizes[:, 0])]
