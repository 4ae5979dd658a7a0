"""Training checkpoints as MindFormers' CheckpointMonitor writes them:
``{output_dir}/checkpoint/rank_{r}/{prefix}_rank_{r}-{epoch}_{step}.ckpt`` every ``save_checkpoint_steps`` optimizer
steps, the oldest beyond ``keep_checkpoint_max`` removed (only files this run wrote). Each holds the trained
parameters (only the adapters under LoRA), the optimizer's moments and step, and ``epoch_num``/``step_num``/
``loss_scale``, which is everything ``resume_training`` needs to continue as if never stopped."""
import logging
import os
import re

import numpy as np
import mindspore as ms

from mindkit.errors import CheckpointError

logger = logging.getLogger("mindkit")
COUNTERS = ("epoch_num", "step_num", "loss_scale")


def _name_key(path):
    m = re.search(r"-(\d+)_(\d+)\.ckpt$", path)
    return (int(m.group(1)), int(m.group(2))) if m else (-1, -1)


class CheckpointSaver:
    def __init__(self, output_dir, rank, prefix="mindkit", every=0, keep=5, trainable_only=False):
        self.folder = os.path.join(output_dir, "checkpoint", f"rank_{rank}")
        self.rank, self.prefix, self.every, self.keep = rank, prefix, every, keep
        self.trainable_only = trainable_only
        self.written = []

    def due(self, global_step):
        return self.every > 0 and global_step % self.every == 0

    def save(self, model, optimizer, epoch, step, loss_scale):
        """``epoch`` counts from 1 and ``step`` is the optimizer step within it, as in MindFormers' file names."""
        os.makedirs(self.folder, exist_ok=True)
        params = [p for p in model.get_parameters() if p.requires_grad or not self.trainable_only]
        names = {p.name for p in params}
        state = [p for _, p in optimizer.parameters_and_names()
                 if p.name.split(".", 1)[-1] in names and p.name.startswith(("adam_m.", "adam_v."))]
        items = [{"name": p.name, "data": p} for p in params + state]
        items.append({"name": "global_step", "data": optimizer.global_step})
        items += [{"name": n, "data": ms.Tensor(np.array([v], np.float32))}
                  for n, v in zip(COUNTERS, (epoch, step, loss_scale))]
        path = os.path.join(self.folder, f"{self.prefix}_rank_{self.rank}-{epoch}_{step}.ckpt")
        ms.save_checkpoint(items, path)
        self.written.append(path)
        while self.keep and len(self.written) > self.keep:
            os.remove(self.written.pop(0))
        logger.info("saved checkpoint %s (%d tensors)", path, len(items))
        return path


def latest_checkpoint(folder, rank, key="resume_training"):
    """The newest (by epoch, step in its name) training checkpoint of ``rank`` under ``folder``."""
    rank_dir = os.path.join(folder, f"rank_{rank}")
    where = rank_dir if os.path.isdir(rank_dir) else folder
    files = [os.path.join(where, f) for f in os.listdir(where) if f.endswith(".ckpt")] if os.path.isdir(where) else []
    if not files:
        raise CheckpointError(key, folder, f"a folder holding training checkpoints (rank_{rank}/*.ckpt)")
    return max(files, key=lambda f: (_name_key(f), os.path.getmtime(f)))


def restore(path, model, optimizer, key="resume_training"):
    """Load parameters, optimizer state and counters from ``path``; returns (epoch, step, loss_scale)."""
    saved = ms.load_checkpoint(path)
    missing = [n for n in COUNTERS if n not in saved]
    if missing:
        raise CheckpointError(key, path, "a training checkpoint (with epoch_num, step_num, loss_scale)",
                              hint=f"{missing[0]} is missing: a weights-only checkpoint cannot resume training")
    targets = {p.name: p for p in model.get_parameters()}
    targets.update({p.name: p for _, p in optimizer.parameters_and_names()})
    targets["global_step"] = optimizer.global_step
    for name, value in saved.items():
        if name in targets:
            targets[name].set_data(value.astype(targets[name].dtype))
    counters = [float(saved[n].asnumpy().reshape(-1)[0]) for n in COUNTERS]
    logger.info("resuming from %s: epoch %d, step %d", path, counters[0], counters[1])
    return int(counters[0]), int(counters[1]), counters[2]
