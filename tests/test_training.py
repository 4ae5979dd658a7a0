"""The training core on a tiny random Llama: loss, accumulation and resume are exact; schedules and LoRA behave."""
import os

import numpy as np
import pytest

import mindspore as ms

from conftest import TINY_CONFIG
from mindkit.config import load_yaml
from mindkit.errors import ConfigError
from mindkit.models import LlamaConfig, LlamaForCausalLM
from mindkit.models.lora import LORA_A, apply_lora, merge_lora
from mindkit.training.checkpoints import CheckpointSaver, latest_checkpoint, restore
from mindkit.training.loop import StepSettings, TrainStep
from mindkit.training.loss import IGNORE, CausalLMLoss, batch_tensors, count_targets
from mindkit.training.optimizer import build_optimizer
from mindkit.training.schedules import lr_table


def tiny_model(seed=0, **overrides):
    ms.set_seed(seed)
    cfg = LlamaConfig.from_dict({**load_yaml(TINY_CONFIG)["model"]["model_config"], **overrides})
    model = LlamaForCausalLM(cfg)
    model.set_train(True)
    return model


def batches(n, batch=2, length=16, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(3, 256, (batch, length)).astype(np.int32)
        labels = ids.copy()
        labels[:, :4] = IGNORE            # a prompt part without loss
        ids[1, -3:], labels[1, -3:] = 0, IGNORE  # right padding in the second row
        out.append({"input_ids": ids, "labels": labels})
    return out


def trainer(model, steps=20, lr=3e-3, **settings):
    optimizer = build_optimizer({"type": "AdamW", "weight_decay": 0.01}, model.trainable_params(),
                                lr_table({"type": "CosineWithWarmUpLR", "learning_rate": lr, "warmup_steps": 2},
                                         steps))
    return TrainStep(model, optimizer, StepSettings(**settings)), optimizer


def weights(model):
    return {p.name: p.asnumpy().copy() for p in model.get_parameters()}


def test_loss_is_the_mean_token_cross_entropy_computed_by_hand():
    model = tiny_model()
    batch = batches(1)[0]
    loss = float(CausalLMLoss(model)(*batch_tensors(batch, 0)).asnumpy())
    logits = model.forward_full(batch["input_ids"][:1]).asnumpy()[0]  # row 0 has no padding
    targets = batch["labels"][0, 1:]
    z = logits[:-1].astype(np.float64)
    logp = z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
    row0 = -sum(logp[t, y] for t, y in enumerate(targets) if y != IGNORE)
    row1 = float(CausalLMLoss(model)(*batch_tensors({k: v[1:] for k, v in batch.items()}, 0)).asnumpy())
    assert abs(loss - (row0 + row1)) < 1e-3
    assert count_targets(batch["labels"]) == 12 + 9  # positions 4..15 and 4..12 predicted


def test_padding_does_not_change_the_loss_of_real_tokens():
    model = tiny_model()
    batch = batches(1)[0]
    row = {k: v[1:, :-3] for k, v in batch.items()}      # row 1 without its padding
    padded = {k: v[1:] for k, v in batch.items()}
    a = float(CausalLMLoss(model)(*batch_tensors(row, 0)).asnumpy())
    b = float(CausalLMLoss(model)(*batch_tensors(padded, 0)).asnumpy())
    assert abs(a - b) < 1e-4


def test_training_drives_the_loss_down():
    model = tiny_model()
    step, _ = trainer(model, steps=30)
    data = batches(1)
    losses = [step(data, s)[0] for s in range(30)]
    assert losses[-1] < losses[0] / 4


def test_gradient_accumulation_equals_the_whole_batch():
    data = batches(2, batch=2)
    whole = {k: np.concatenate([d[k] for d in data]) for k in data[0]}
    results = []
    for micro, acc in ((data, 2), ([whole], 1)):
        model = tiny_model()
        step, _ = trainer(model, accumulation=acc, max_grad_norm=1.0)
        loss = [step(micro, s)[0] for s in range(3)]
        results.append((loss, weights(model)))
    assert np.allclose(results[0][0], results[1][0], atol=1e-5)
    assert all(np.allclose(results[0][1][n], results[1][1][n], atol=1e-5) for n in results[0][1])


def test_resume_gives_bit_identical_weights(tmp_path):
    data = batches(6)
    model = tiny_model()
    step, _ = trainer(model, max_grad_norm=1.0)
    for s in range(6):
        step([data[s]], s)
    straight = weights(model)

    model = tiny_model()
    step, opt = trainer(model, max_grad_norm=1.0)
    saver = CheckpointSaver(str(tmp_path), 0, "tiny", every=3, keep=2)
    for s in range(3):
        step([data[s]], s)
    saver.save(model, opt, 1, 3, step.scale)
    del model, step, opt

    model = tiny_model(seed=5)  # different initial weights: everything must come from the checkpoint
    step, opt = trainer(model, max_grad_norm=1.0)
    epoch, done, scale = restore(latest_checkpoint(str(tmp_path / "checkpoint"), 0), model, opt)
    assert (epoch, done) == (1, 3)
    for s in range(done, 6):
        step([data[s]], s)
    resumed = weights(model)
    assert all(np.array_equal(straight[n], resumed[n]) for n in straight)


def test_checkpoint_monitor_keeps_the_last_n(tmp_path):
    model = tiny_model()
    _, opt = trainer(model)
    saver = CheckpointSaver(str(tmp_path), 0, "tiny", every=1, keep=2)
    for s in range(1, 5):
        saver.save(model, opt, 1, s, 1.0)
    names = sorted(p.name for p in (tmp_path / "checkpoint" / "rank_0").iterdir())
    assert names == ["tiny_rank_0-1_3.ckpt", "tiny_rank_0-1_4.ckpt"]


def test_schedules_warm_up_then_decay():
    cos = lr_table({"type": "CosineWithWarmUpLR", "learning_rate": 1.0, "lr_end": 0.1, "warmup_ratio": 0.2}, 10)
    assert np.allclose(cos[:2], [0.5, 1.0]) and cos[2] == pytest.approx(1.0) and cos[-1] > 0.1
    assert np.all(np.diff(cos[2:]) < 0)
    lin = lr_table({"type": "LinearWithWarmUpLR", "learning_rate": 1.0, "warmup_steps": 0}, 4)
    assert np.allclose(lin, [1.0, 0.75, 0.5, 0.25])
    assert np.allclose(lr_table({"type": "constant", "learning_rate": 0.5}, 3), 0.5)
    with pytest.raises(ConfigError, match="lr_schedule.type"):
        lr_table({"type": "Nope"}, 3)


def test_lora_trains_only_adapters_and_merges_back(tmp_path):
    model = tiny_model()
    base = weights(model)
    adapters = apply_lora(model, {"pet_type": "lora", "lora_rank": 4, "lora_alpha": 8,
                                  "target_modules": [".*wq", ".*wv", ".*w[123]"]})
    assert {p.name for p in model.trainable_params()} == set(adapters) and len(adapters) == 2 * 5 * 2
    step, _ = trainer(model, steps=20, lr=5e-2)
    data = batches(1)
    losses = [step(data, s)[0] for s in range(20)]
    assert losses[-1] < losses[0] - 0.25  # random tokens through a frozen random head: a modest, steady fall
    after = weights(model)
    assert all(np.array_equal(base[n], after[n]) for n in base)  # the base is bit-identical
    ids = data[0]["input_ids"][:1]
    tuned = model.forward_full(ids).asnumpy()
    merged = merge_lora(after, alpha=8, rank=4)
    assert not any(n.endswith(LORA_A) for n in merged)
    plain = tiny_model()
    for p in plain.get_parameters():
        p.set_data(ms.Tensor(merged[p.name]))
    assert np.abs(plain.forward_full(ids).asnumpy() - tuned).max() < 1e-4


def test_lora_targets_matching_nothing_or_the_head_name_the_key():
    with pytest.raises(ConfigError, match="pet_config.target_modules.*attention.wq"):
        apply_lora(tiny_model(), {"pet_type": "lora", "target_modules": ".*query_key_value"})
    with pytest.raises(ConfigError, match="pet_config.target_modules.*lm_head"):
        apply_lora(tiny_model(), {"pet_type": "lora", "target_modules": ".*wq|lm_head"})


def test_merge_lora_script_folds_a_training_checkpoint_into_the_base(tmp_path):
    import subprocess
    import sys
    from conftest import REPO
    from mindkit.checkpoint import read_state, save_state
    model = tiny_model()
    base = weights(model)
    save_state(base, str(tmp_path / "base.ckpt"))
    apply_lora(model, {"pet_type": "lora", "lora_rank": 4, "lora_alpha": 8, "target_modules": ".*wq"})
    step, opt = trainer(model, steps=3)
    for s in range(3):
        step(batches(1), s)
    CheckpointSaver(str(tmp_path), 0, "lora", trainable_only=True).save(model, opt, 1, 3, 1.0)
    adapter = tmp_path / "checkpoint" / "rank_0" / "lora_rank_0-1_3.ckpt"
    script = os.path.join(REPO, "scripts", "merge_lora.py")
    args = [sys.executable, script, "--base", str(tmp_path / "base.ckpt"), "--adapter", str(adapter),
            "--lora_rank", "4", "--lora_alpha", "8", "--output", str(tmp_path / "merged.ckpt")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged = read_state(str(tmp_path / "merged.ckpt"))
    expected = merge_lora(weights(model), alpha=8, rank=4)
    assert set(merged) == set(base) and all(np.allclose(merged[k], expected[k], atol=1e-7) for k in base)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)  # the output exists now
    assert proc.returncode == 1 and "does not exist yet" in proc.stderr
