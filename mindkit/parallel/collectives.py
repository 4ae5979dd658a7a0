"""Collectives on plain Python data (token-id lists, a decision of rank 0), built on MindSpore's AllGather and
AllReduce."""
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


def all_reduce_int(value, mesh):
    """The sum of every rank's small integer ``value``; doubles as a barrier. (CPU AllReduce takes floats only;
    float32 holds integers exactly up to 2**24.)"""
    if mesh.world_size == 1:
        return value
    from mindspore import Tensor, ops
    return int(round(float(ops.AllReduce()(Tensor(np.array([value], np.float32))).asnumpy()[0])))


def share_from_main(value, mesh):
    """Rank 0's integer ``value`` on every rank (the others add 0)."""
    return all_reduce_int(value if mesh.is_main else 0, mesh)


def run_step(mesh, key, fn, *args):
    """Run ``fn`` on every rank and learn whether any failed: the failing rank raises its own error, the others an
    error naming ``key`` and pointing at the failed rank's log, instead of waiting forever at the next collective."""
    error, result = None, None
    try:
        result = fn(*args)
    except Exception as e:  # re-raised below, after every rank knows
        error = e
    failures = all_reduce_int(int(error is not None), mesh)
    if error is not None:
        raise error
    if failures:
        from mindkit.errors import MindkitError
        raise MindkitError(key, "a failure on another rank", "every rank to finish this step",
                           hint=f"{failures} rank(s) failed: see output/log/rank_N/error.log")
    return result
