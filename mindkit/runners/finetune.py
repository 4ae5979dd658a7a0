"""``run_mode: finetune`` (from a checkpoint) and ``train`` (from random weights, or a checkpoint): the YAML's
``train_dataset`` through ``mindkit.training`` — AdamW with a step-indexed learning-rate table, gradient accumulation,
clipping and loss scaling from ``runner_wrapper``, data parallelism over msrun, ``MFLossMonitor``-style log lines,
``CheckpointMonitor`` files, and ``resume_training`` that continues exactly where a run stopped.
"""
import logging
import os

from mindkit.errors import ConfigError
from mindkit.registry import register
from mindkit.runners.build import build_model, build_model_config, build_processor, start_run
from mindkit.training.checkpoints import CheckpointSaver, latest_checkpoint, restore
from mindkit.training.loop import LossMonitor, StepSettings, TrainStep
from mindkit.training.optimizer import build_optimizer
from mindkit.training.schedules import lr_table

logger = logging.getLogger("mindkit")


def callback(config, name):
    """The ``callbacks`` entry of ``type: name`` (MindFormers lists them), or {}."""
    entries = config.section("callbacks") or []
    if not isinstance(entries, list):
        raise ConfigError("callbacks", entries, "a list of {type: ...} entries")
    return next((dict(e) for e in entries if isinstance(e, dict) and e.get("type") == name), {})


def step_settings(config, pad_token_id):
    """``runner_wrapper`` (MindFormers' MFTrainOneStepCell keys): clipping, and ``scale_sense`` — a number (a fixed
    loss scale) or {type: DynamicLossScaleUpdateCell | FixedLossScaleUpdateCell, loss_scale_value, scale_factor,
    scale_window}."""
    wrapper = config.section("runner_wrapper")
    scale = wrapper.get("scale_sense", 1.0)
    if not isinstance(scale, dict):
        scale = {"type": "FixedLossScaleUpdateCell", "loss_scale_value": scale}
    try:
        value = float(scale.get("loss_scale_value", 65536.0))
    except (TypeError, ValueError):
        raise ConfigError("runner_wrapper.scale_sense", scale, "a number, or {type, loss_scale_value, ...}") from None
    return StepSettings(
        accumulation=config.runner_config.gradient_accumulation_steps,
        max_grad_norm=float(wrapper.get("max_grad_norm", 1.0)) if wrapper.get("use_clip_grad", True) else 0.0,
        loss_scale=value, scale_factor=float(scale.get("scale_factor", 2)),
        scale_window=int(scale.get("scale_window", 1000)),
        dynamic_scale=scale.get("type", "DynamicLossScaleUpdateCell") == "DynamicLossScaleUpdateCell",
        seed=config.seed, pad_token_id=pad_token_id)


def grouped(batches, size):
    """Consecutive groups of ``size`` micro-batches (an incomplete last group is dropped)."""
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []


@register("runner", "train")
@register("runner", "finetune")
class FinetuneRunner:
    """``model``/``dataset`` given (the Python Trainer API) are used instead of building them from the config."""

    def __init__(self, config, model=None, dataset=None):
        self.config, self.model, self.dataset = config, model, dataset

    def run(self):
        cfg = self.config
        mesh = start_run(cfg)
        if mesh.model_parallel > 1 or mesh.pipeline_stage > 1:
            raise ConfigError("parallel_config", f"model_parallel={mesh.model_parallel}, "
                              f"pipeline_stage={mesh.pipeline_stage}", "data parallelism only for training here")
        processor = build_processor(cfg)
        model_config = build_model_config(cfg)
        has_weights = bool(cfg.load_checkpoint or getattr(model_config, "checkpoint_name_or_path", None))
        if cfg.run_mode == "finetune" and not has_weights and self.model is None:
            raise ConfigError("load_checkpoint", cfg.load_checkpoint, "the checkpoint to finetune",
                              hint="run_mode: train starts from random weights")
        model = self.model = self.model or build_model(cfg, load=has_weights, mesh=mesh,
                                                       random_init=not has_weights)
        model.set_train(True)
        from mindkit.data import build_dataset
        data = self.dataset or build_dataset(cfg, "train_dataset", processor, model.config.seq_length,
                                             data_parallel=mesh.data_parallel, rank=mesh.dp_rank)
        settings = step_settings(cfg, model.config.pad_token_id or 0)
        rc = cfg.runner_config
        steps_per_epoch = data.num_batches // settings.accumulation
        if steps_per_epoch < 1:
            raise ConfigError("train_dataset", f"{data.num_batches} batch(es) per epoch",
                              f"at least gradient_accumulation_steps ({settings.accumulation})")
        total = rc.epochs * steps_per_epoch
        lrs = lr_table(cfg.section("lr_schedule"), total)
        optimizer = build_optimizer(cfg.section("optimizer"), model.trainable_params(), lrs)
        train_step = TrainStep(model, optimizer, settings, mesh.data_parallel)
        saving = callback(cfg, "CheckpointMonitor")
        saver = CheckpointSaver(cfg.output_dir, mesh.rank, saving.get("prefix", "mindkit"),
                                int(saving.get("save_checkpoint_steps", 0) or 0),
                                int(saving.get("keep_checkpoint_max", 5) or 0),
                                trainable_only=bool(cfg.section("pet_config")))
        epoch, step = self.resume_point(model, optimizer, train_step, mesh)
        tokens = data.batch_size * settings.accumulation * mesh.data_parallel * model.config.seq_length
        monitor = LossMonitor(rc.epochs, steps_per_epoch, tokens,
                              int(callback(cfg, "MFLossMonitor").get("per_print_times", 1) or 1))
        while epoch < rc.epochs:
            skip = step * settings.accumulation
            for group in grouped(data.batches(epoch, skip), settings.accumulation):
                global_step = epoch * steps_per_epoch + step
                loss, overflow = train_step(group, global_step)
                step += 1
                monitor(epoch + 1, step, loss, float(lrs[min(global_step, len(lrs) - 1)]), overflow,
                        train_step.scale)
                if saver.due(global_step + 1):
                    saver.save(model, optimizer, epoch + 1, step, train_step.scale)
                if step == steps_per_epoch:
                    break
            epoch, step = epoch + 1, 0
        path = saver.save(model, optimizer, rc.epochs, steps_per_epoch, train_step.scale)
        logger.info("training done: %d steps, last loss %.6f, final checkpoint %s", len(monitor.history),
                    monitor.history[-1] if monitor.history else float("nan"), path)
        return monitor.history

    def resume_point(self, model, optimizer, train_step, mesh):
        """(epoch, step) to start from: (0, 0), or after the checkpoint ``resume_training`` names (True: the newest
        in ``load_checkpoint``'s folder or this run's ``output/checkpoint``; a file name: that file there)."""
        cfg = self.config
        if not cfg.resume_training:
            return 0, 0
        folder = cfg.load_checkpoint if cfg.load_checkpoint and os.path.isdir(cfg.load_checkpoint) \
            else os.path.join(cfg.output_dir, "checkpoint")
        if isinstance(cfg.resume_training, str):
            path = os.path.join(folder, f"rank_{mesh.rank}", cfg.resume_training)
            if not os.path.isfile(path):
                path = os.path.join(folder, cfg.resume_training)
        else:
            path = latest_checkpoint(folder, mesh.rank)
        epoch, step, scale = restore(path, model, optimizer)
        train_step.scale = scale
        return epoch - 1, step
