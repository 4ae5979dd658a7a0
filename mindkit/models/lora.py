"""LoRA (``pet_config: {pet_type: lora, lora_rank, lora_alpha, lora_dropout, target_modules}``), MindFormers-style.

A targeted ``Linear`` becomes a ``LoRALinear`` in place (same object, same weight Parameter and name, frozen) and adds
``mindpet_delta_lora_a`` (rank, in) and ``mindpet_delta_lora_b`` (out, rank, zeros: training starts from the base
model), as MindFormers names them: y = W x + (alpha / rank) * B A dropout(x). Only the adapters train and are saved;
``merge_lora`` folds them into the base weights (W + scale * B A) for a plain checkpoint.
"""
import logging
import re

import numpy as np
import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import HeUniform, initializer

from mindkit.errors import ConfigError
from mindkit.models.layers import Linear, cast

logger = logging.getLogger("mindkit")
LORA_A, LORA_B = "mindpet_delta_lora_a", "mindpet_delta_lora_b"


class LoRALinear(Linear):
    """A Linear with adapters. Made from an existing Linear by ``adapt`` (its class is swapped in place), so whatever
    the Linear holds (its weight, its layout, a quantized form) stays as it is."""

    @classmethod
    def adapt(cls, cell, rank, alpha, dropout):
        if cell.tp.size > 1:
            raise ConfigError("pet_config", "lora with model_parallel > 1",
                              "LoRA on a single process or with data parallelism (tensor-parallel LoRA is not built)")
        cell.__class__ = cls
        for p in cell.get_parameters():
            p.requires_grad = False
        cell.lora_a = Parameter(initializer(HeUniform(negative_slope=np.sqrt(5)), (rank, cell.in_features),
                                            ms.float32), name=LORA_A)
        cell.lora_b = Parameter(initializer("zeros", (cell.out_features, rank), ms.float32), name=LORA_B)
        cell.scaling = float(alpha) / rank
        cell.dropout = nn.Dropout(p=float(dropout)) if dropout else None
        cell.add_inside = False  # the adapters add to the product: no kernel may take it over (Linear.folds)
        return cell

    def construct(self, x, residual=None):
        y = super().construct(x)
        shape = x.shape
        h = x.reshape(-1, shape[-1]).astype(ms.float32)
        if self.dropout is not None:
            h = self.dropout(h)
        delta = ops.matmul(ops.matmul(h, self.lora_a.T), self.lora_b.T) * self.scaling
        y = y + cast(delta.reshape(shape[:-1] + (self.out_features,)), y.dtype)
        return y if residual is None else residual + cast(y, residual.dtype)


def _check(pet):
    if not isinstance(pet, dict) or str(pet.get("pet_type", "")).lower() != "lora":
        raise ConfigError("pet_config.pet_type", (pet or {}).get("pet_type") if isinstance(pet, dict) else pet,
                          "lora")
    rank = pet.get("lora_rank", 8)
    if not isinstance(rank, int) or rank < 1:
        raise ConfigError("pet_config.lora_rank", rank, "an integer >= 1")
    dropout = float(pet.get("lora_dropout", 0.0) or 0.0)
    if not 0.0 <= dropout < 1.0:
        raise ConfigError("pet_config.lora_dropout", dropout, "a probability in [0, 1)")
    return rank, float(pet.get("lora_alpha", 16)), dropout, pet.get("target_modules", ".*wq|.*wv")


def apply_lora(model, pet):
    """Wrap every Linear whose name matches ``target_modules`` (a regex, or a list of them) in LoRA, freeze
    everything else; returns the adapter parameter names."""
    rank, alpha, dropout, targets = _check(pet)
    pattern = re.compile("|".join(targets) if isinstance(targets, (list, tuple)) else str(targets))
    chosen = [(name, cell) for name, cell in model.cells_and_names()
              if isinstance(cell, Linear) and not isinstance(cell, LoRALinear) and pattern.fullmatch(name)]
    # the head multiplies by its weight directly (a tied head has no Linear at all): an adapter there would be inert
    head = getattr(model, "head_name", None)
    if any(name == head for name, _ in chosen):
        raise ConfigError("pet_config.target_modules", targets,
                          f"patterns matching decoder-layer projections, not {head}")
    if not chosen:
        linears = [n for n, c in model.cells_and_names() if isinstance(c, Linear)]
        raise ConfigError("pet_config.target_modules", targets, "a pattern matching some Linear layers",
                          hint="they are named like " + ", ".join(linears[:3]))
    for p in model.get_parameters():
        p.requires_grad = False
    adapters = []
    for name, cell in chosen:
        LoRALinear.adapt(cell, rank, alpha, dropout)
        cell.lora_a.name, cell.lora_b.name = f"{name}.{LORA_A}", f"{name}.{LORA_B}"  # MindFormers' full names
        adapters += [cell.lora_a.name, cell.lora_b.name]
    logger.info("LoRA rank %d on %d layers: %d adapter parameters (%d values) train, the rest is frozen", rank,
                len(chosen), len(adapters), sum(int(np.prod(p.shape)) for p in model.trainable_params()))
    return adapters


def merge_lora(state, alpha, rank):
    """A plain checkpoint: every ``X.weight`` with adapters ``X.mindpet_delta_lora_{a,b}`` becomes
    W + (alpha / rank) * B @ A; adapters are dropped."""
    out = {k: v for k, v in state.items() if not k.endswith((LORA_A, LORA_B))}
    for name in [k for k in state if k.endswith(LORA_A)]:
        prefix = name[: -len(LORA_A)]
        a, b = state[name].astype(np.float32), state[prefix + LORA_B].astype(np.float32)
        weight = out[prefix + "weight"]
        out[prefix + "weight"] = (weight.astype(np.float32) + alpha / rank * b @ a).astype(weight.dtype)
    return out
