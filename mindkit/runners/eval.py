"""``run_mode: eval``: the YAML's ``metric`` (one or a list) on ``eval_dataset``.

Text metrics (``ADGENMetric``, ``EmF1Metric``) compare generated answers with the references; the answers come from
the same batched engine as predict (greedy unless the model config says otherwise). ``PerplexityMetric`` scores the
labelled batches with the training loss. Data-parallel ranks take contiguous shares and rank 0 gathers them, so the
result equals a single process's. The table goes to the console, the numbers to ``{output_dir}/eval_results.json``.
"""
import json
import logging
import os
import time

import numpy as np

from mindkit import registry
from mindkit.errors import ConfigError
from mindkit.generation import generate
from mindkit.generation.model_runner import ModelRunner
from mindkit.parallel.collectives import all_gather_token_lists
from mindkit.registry import register
from mindkit.runners.build import build_model, build_processor, start_run
from mindkit.runners.predict import ProgressBar, generation_config

logger = logging.getLogger("mindkit")


def build_metrics(config):
    section = config.section("metric")
    entries = section if isinstance(section, list) else [section]
    if not entries or not all(isinstance(e, dict) and e.get("type") for e in entries):
        raise ConfigError("metric", section, "{type: ADGENMetric | PerplexityMetric | EmF1Metric}, or a list of them")
    return [registry.build("metric", dict(e), key="metric") for e in entries]


def needs_loss(metric):
    return getattr(metric, "input_kind", "text") == "loss"


def show_table(results):
    width = max(len(k) for r in results.values() for k in r)
    for name, values in results.items():
        print(name)
        for k, v in values.items():
            print(f"  {k:<{width}}  {v:10.4f}")


@register("runner", "eval")
class EvalRunner:
    """``model``/``dataset`` given (the Python Trainer API) are used instead of building them from the config."""

    def __init__(self, config, model=None, dataset=None):
        self.config, self.model, self.dataset = config, model, dataset

    def run(self):
        cfg = self.config
        mesh = start_run(cfg)
        metrics = build_metrics(cfg)
        processor = build_processor(cfg)
        model = self.model or build_model(cfg, mesh=mesh)
        model.set_train(False)
        from mindkit.data import build_dataset
        data = self.dataset or build_dataset(cfg, "eval_dataset", processor, model.config.seq_length,
                                             data_parallel=mesh.data_parallel, rank=mesh.dp_rank)
        results = {}
        if any(not needs_loss(m) for m in metrics):
            preds, refs = self.generate_answers(model, processor.tokenizer, data, mesh)
            for m in metrics:
                if not needs_loss(m) and mesh.is_main:
                    m.clear()
                    m.update(preds, refs)
                    results[type(m).__name__] = m.eval()
        if any(needs_loss(m) for m in metrics):
            loss_sum, tokens = self.score(model, data, mesh)
            for m in metrics:
                if needs_loss(m):
                    m.clear()
                    m.update(loss_sum, tokens)
                    results[type(m).__name__] = m.eval()
        if not mesh.is_main:
            return None
        show_table(results)
        path = os.path.join(cfg.output_dir, "eval_results.json")
        os.makedirs(cfg.output_dir, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, ensure_ascii=False)
        logger.info("eval results written to %s", os.path.abspath(path))
        return results

    def generate_answers(self, model, tokenizer, data, mesh):
        """Greedy answers to this replica's prompts, gathered on every rank in input order."""
        samples = data.eval_samples()
        gen = generation_config(model, tokenizer, seed=self.config.seed)
        runner = ModelRunner(model, compiled=self.config.context.mode == 0)
        batch = self.config.predict_batch_size or data.batch_size
        bar = ProgressBar(len(samples), enabled=mesh.is_main)
        answers, tokens = [], 0
        for start in range(0, len(samples), batch):
            out = generate(model, [ids for ids, _ in samples[start:start + batch]], gen, runner=runner)
            answers.extend(out.new_tokens)
            tokens += out.generated_tokens
            bar.update(len(out.new_tokens), tokens)
        gathered = all_gather_token_lists(answers, mesh)
        replicas = gathered[:mesh.data_parallel * mesh.model_parallel:mesh.model_parallel]
        refs = [ref for _, ref in data.samples]  # every rank holds all records; shares are contiguous, in order
        return tokenizer.batch_decode([a for part in replicas for a in part]), refs

    def score(self, model, data, mesh):
        """Summed token loss and token count over the labelled batches (all replicas)."""
        from mindkit.training.loss import CausalLMLoss, batch_tensors, count_targets
        from mindkit.parallel.collectives import all_reduce_int
        loss_cell, loss_sum, tokens = CausalLMLoss(model), 0.0, 0
        t0 = time.perf_counter()
        for batch in data.batches(0, 0):
            loss_sum += float(loss_cell(*batch_tensors(batch, model.config.pad_token_id or 0)).asnumpy())
            tokens += count_targets(batch["labels"])
        if mesh.data_parallel > 1:
            from mindspore import Tensor, ops
            loss_sum = float(ops.AllReduce()(Tensor(np.array([loss_sum], np.float32))).asnumpy()[0])
            tokens = all_reduce_int(tokens, mesh)
        logger.info("scored %d tokens in %.1f s", tokens, time.perf_counter() - t0)
        return loss_sum, tokens

