"""One optimizer step per ``gradient_accumulation_steps`` micro-batches, in MindFormers' order: scaled loss →
gradients summed over micro-batches (and over data-parallel ranks) → unscale → overflow check → clip → AdamW.

The loss is normalized by the target-token count of the whole global batch (all micro-batches, all ranks), counted
from the labels before the forward pass, so accumulation and data parallelism give exactly the single-process loss and
gradients of the same global batch. Each step reseeds MindSpore's RNG from (seed, global step), so dropout, and so a
resumed run, does not depend on how many steps ran before in this process.
"""
import dataclasses
import logging
import time

import numpy as np
import mindspore as ms
from mindspore import Tensor, ops

from mindkit.training.loss import CausalLMLoss, batch_tensors, count_targets

logger = logging.getLogger("mindkit")


@dataclasses.dataclass
class StepSettings:
    accumulation: int = 1
    max_grad_norm: float = 0.0            # 0: no clipping
    loss_scale: float = 1.0               # > 1 with scale_window: dynamic loss scaling (fp16)
    scale_factor: float = 2.0
    scale_window: int = 1000
    dynamic_scale: bool = False
    seed: int = 0
    pad_token_id: int = 0


class TrainStep:
    def __init__(self, model, optimizer, settings, data_parallel=1):
        self.model, self.optimizer, self.s = model, optimizer, settings
        model.set_train(True)  # layers differentiate their plain-MindSpore path (the fused kernels have no bprop)
        self.loss_cell = CausalLMLoss(model)
        self.grad_fn = ms.value_and_grad(self._loss, None, optimizer.parameters)
        self.reduce = ops.AllReduce() if data_parallel > 1 else None
        self.scale = float(settings.loss_scale)
        self.good_steps = 0

    def _loss(self, ids, labels, valid, norm, scale):
        return self.loss_cell(ids, labels, valid) / norm * scale

    def _all_ranks(self, value):
        if self.reduce is None:
            return value
        return self.reduce(value if isinstance(value, Tensor) else Tensor(np.float32(value)))

    def __call__(self, micro_batches, global_step):
        """One optimizer step; returns (mean token loss of the global batch, overflowed?)."""
        ms.set_seed(self.s.seed + global_step)
        tokens = float(self._all_ranks(float(sum(count_targets(b["labels"]) for b in micro_batches))))
        norm, scale = Tensor(np.float32(max(tokens, 1.0))), Tensor(np.float32(self.scale))
        loss, grads = 0.0, None
        for batch in micro_batches:
            value, g = self.grad_fn(*batch_tensors(batch, self.s.pad_token_id), norm, scale)
            loss = loss + value
            grads = g if grads is None else tuple(a + b for a, b in zip(grads, g))
        if self.reduce is not None:
            grads = tuple(self.reduce(g) for g in grads)
            loss = self.reduce(loss)
        loss = float(loss.asnumpy()) / self.scale
        if self.scale != 1.0:
            grads = tuple(g / self.scale for g in grads)
        finite = bool(ms.amp.all_finite(grads).asnumpy())
        if finite:
            if self.s.max_grad_norm > 0:
                grads = ops.clip_by_global_norm(grads, self.s.max_grad_norm)
            self.optimizer(grads)
        self._adjust_scale(finite)
        return loss, not finite

    def _adjust_scale(self, finite):
        if not self.s.dynamic_scale:
            return
        if not finite:
            self.scale, self.good_steps = max(self.scale / self.s.scale_factor, 1.0), 0
            return
        self.good_steps += 1
        if self.good_steps >= self.s.scale_window:
            self.scale, self.good_steps = self.scale * self.s.scale_factor, 0


class LossMonitor:
    """MindFormers' MFLossMonitor line: epoch, step, loss, lr, time per step, tokens/s, overflow, loss scale."""

    def __init__(self, epochs, steps_per_epoch, tokens_per_step, every=1):
        self.epochs, self.steps, self.tokens, self.every = epochs, steps_per_epoch, tokens_per_step, every
        self.last = time.perf_counter()
        self.history = []

    def __call__(self, epoch, step, loss, lr, overflow, scale):
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        self.history.append(loss)
        if step % self.every == 0 or step == self.steps:
            logger.info("Epoch:[%3d/%3d], step:[%5d/%5d], loss: %.6f, per_step_time: %dms, lr: %.6g, "
                        "tokens/s: %.1f, overflow cond: %s, loss_scale: %g", epoch, self.epochs, step, self.steps,
                        loss, elapsed * 1000, lr, self.tokens / max(elapsed, 1e-9), overflow, scale)
