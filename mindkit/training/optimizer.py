"""Optimizers by their MindFormers names. Both AdamW names are MindSpore's ``nn.AdamWeightDecay`` (its moments are
float32 parameters named ``adam_m.*``/``adam_v.*``, as in MindFormers checkpoints); norms and biases (1-D
parameters) get no weight decay."""
import mindspore as ms
from mindspore import Tensor, nn

from mindkit.errors import ConfigError

OPTIMIZERS = ("AdamW", "AdamWeightDecay", "FP32StateAdamWeightDecay", "adamw")


def build_optimizer(section, params, lr_table, key="optimizer"):
    section = dict(section or {"type": "AdamW"})
    kind = section.pop("type", "AdamW")
    if kind not in OPTIMIZERS:
        raise ConfigError(f"{key}.type", kind, "one of " + ", ".join(OPTIMIZERS))
    betas = section.get("betas") or (section.get("beta1", 0.9), section.get("beta2", 0.999))
    decay = float(section.get("weight_decay", 0.0))
    params = list(params)
    if not params:
        raise ConfigError(key, "no trainable parameters", "at least one parameter to train")
    groups = [{"params": [p for p in params if len(p.shape) > 1], "weight_decay": decay},
              {"params": [p for p in params if len(p.shape) <= 1], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    return nn.AdamWeightDecay(groups, learning_rate=Tensor(lr_table, ms.float32), beta1=float(betas[0]),
                              beta2=float(betas[1]), eps=float(section.get("eps", 1e-8)))
