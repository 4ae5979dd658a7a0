"""Learning-rate schedules by their MindFormers names, as one value per optimizer step (a step-indexed table is
what ``nn.AdamWeightDecay`` reads with its ``global_step``, and it makes a resumed run use exactly the same rates)."""
import math

import numpy as np

from mindkit.errors import ConfigError


def _warmup(section, total):
    if section.get("warmup_steps") is not None:
        return int(section["warmup_steps"])
    return int(float(section.get("warmup_ratio") or 0.0) * total)


def _constant(lr, end, step, warm, total):
    return lr


def _linear(lr, end, step, warm, total):
    return end + (lr - end) * max(0.0, (total - step) / max(1, total - warm))


def _cosine(lr, end, step, warm, total):
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return end + (lr - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


SCHEDULES = {"constant": _constant, "ConstantWarmUpLR": _constant, "LinearWithWarmUpLR": _linear,
             "CosineWithWarmUpLR": _cosine}


def lr_table(section, total_steps, key="lr_schedule"):
    """Per-step learning rates for ``total_steps`` optimizer steps from an ``lr_schedule`` section
    ({type, learning_rate, lr_end, warmup_ratio | warmup_steps, total_steps}); warm-up is linear from 0."""
    section = dict(section or {"type": "constant"})
    kind = section.get("type", "constant")
    if kind not in SCHEDULES:
        raise ConfigError(f"{key}.type", kind, "one of " + ", ".join(SCHEDULES))
    lr = float(section.get("learning_rate", 1e-5))
    end = float(section.get("lr_end", 0.0) or 0.0)
    total = int(section.get("total_steps") or -1)
    total = total_steps if total <= 0 else total
    warm = _warmup(section, total)
    if lr <= 0 or warm < 0 or warm > total:
        raise ConfigError(key, section, f"learning_rate > 0 and 0 <= warm-up steps <= total steps ({total})")
    rates = [lr * (s + 1) / warm if s < warm else SCHEDULES[kind](lr, end, s, warm, total)
             for s in range(max(total, total_steps))]
    return np.asarray(rates, np.float32)
