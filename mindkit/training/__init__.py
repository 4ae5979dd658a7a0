"""Finetuning: causal-LM loss, optimizers and learning-rate schedules by their MindFormers names, the training loop
with gradient accumulation, clipping, loss scaling and data parallelism, checkpoints and resume."""
