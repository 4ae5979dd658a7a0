"""``run_mode: predict``: prompts → batches → generate → ``text_generation_result.txt`` (MindFormers' format).

Prompts run in batches of ``predict_batch_size`` (default ``model_config.batch_size``), the remainder as a smaller
batch. Each batch's dict ``{'text_generation_text': [prompt + completion, ...]}`` goes into one list written with
``str()`` as MindFormers does; the console gets each answer and the speed line.
"""
import logging
import os
import sys
import time

import numpy as np

from mindkit.data.predict_inputs import read_prompts
from mindkit.errors import ConfigError
from mindkit.generation import GenerationConfig, generate
from mindkit.generation.model_runner import ModelRunner
from mindkit.parallel.collectives import all_gather_token_lists
from mindkit.parallel.strategy import save_run_strategy
from mindkit.registry import register
from mindkit.runners.build import build_model, build_processor, check_supported, start_run

logger = logging.getLogger("mindkit")


def check_writable(path, key):
    """Fail before hours of generation, not after: the results file's folder must exist and be writable."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ConfigError(key, path, "a writable file path in an existing folder")


def show_answers(prompts, answers):
    for prompt, answer in zip(prompts, answers):
        print(f"prompt: {prompt}\nanswer: {answer}\n", flush=True)


def strategy_format(config):
    """json when MindFormers' ``parallel.strategy_ckpt_save_file`` ends in .json, else MindSpore's protobuf."""
    name = config.section("parallel").get("strategy_ckpt_save_file") or ""
    return "json" if str(name).endswith(".json") else "ckpt"


class ProgressBar:
    """A one-line progress bar on stderr (only when there is more than one batch)."""

    def __init__(self, total, enabled):
        self.total, self.enabled, self.done, self.start = total, enabled, 0, time.perf_counter()

    def update(self, n, tokens):
        self.done += n
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        filled = int(30 * self.done / self.total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} prompts, "
                         f"{tokens / elapsed:.1f} tokens/s, {eta:.0f}s left")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


@register("runner", "predict")
class PredictRunner:
    """A ``model`` given (the Python Trainer API) is used instead of building one from the config."""

    def __init__(self, config, model=None):
        self.config, self.model = config, model

    def run(self):
        cfg = self.config
        check_supported(cfg)
        if cfg.only_save_strategy:
            return self.save_strategy_only()
        prompts = read_prompts(cfg.input_data)
        check_writable(cfg.save_file, "save_file")
        mesh = start_run(cfg)
        processor = build_processor(cfg)
        tokenizer = processor.tokenizer
        t0 = time.perf_counter()
        model = self.model or build_model(cfg, mesh=mesh)
        model.set_train(False)
        logger.info("model built and weights loaded in %.1f s", time.perf_counter() - t0)
        if cfg.use_parallel:
            save_run_strategy(model, mesh, cfg.output_dir, strategy_format(cfg))
        encoded = processor.encode(prompts, model.config.seq_length)
        gen = generation_config(model, tokenizer, seed=cfg.seed)
        batch_size = cfg.predict_batch_size or model.config.batch_size
        # data parallel: each replica takes a contiguous share, so gathering in rank order keeps the input order
        shares = [s.tolist() for s in np.array_split(np.arange(len(prompts)), mesh.data_parallel)]
        mine = shares[mesh.dp_rank]
        runner = ModelRunner(model, compiled=cfg.context.mode == 0)
        sequences = generate_batches(model, runner, tokenizer, gen, [encoded[i] for i in mine],
                                     [prompts[i] for i in mine], batch_size, echo=mesh.world_size == 1)
        gathered = all_gather_token_lists(sequences, mesh)
        if not mesh.is_main:
            return None
        replicas = gathered[:mesh.data_parallel * mesh.model_parallel:mesh.model_parallel]  # stage 0, mp rank 0 of each
        sequences = [seq for part in replicas for seq in part]
        if mesh.world_size > 1:
            show_answers(prompts, tokenizer.batch_decode([seq[len(ids):] for seq, ids in zip(sequences, encoded)]))
        results = [r for share in shares for r in batch_results(tokenizer, [sequences[i] for i in share], batch_size)]
        if os.path.exists(cfg.save_file):
            logger.info("replacing the previous %s", cfg.save_file)
        with open(cfg.save_file, "w", encoding="utf-8") as f:
            f.write(str(results))
        logger.info("results written to %s", os.path.abspath(cfg.save_file))
        return results

    def save_strategy_only(self):
        """``only_save_strategy``: this rank's strategy file from the model's declarations; no weights, no prompts."""
        mesh = start_run(self.config)
        cfg = self.config
        return save_run_strategy(build_model(cfg, load=False, mesh=mesh), mesh, cfg.output_dir, strategy_format(cfg))


def generation_config(model, tokenizer, **overrides):
    """The model config's generation defaults (the tokenizer's EOS when the model names none), then ``overrides``."""
    gen = GenerationConfig.from_model_config(model.config)
    if tokenizer.eos_token_id is not None and not gen.eos_token_id:
        gen = gen.updated(eos_token_id=(tokenizer.eos_token_id,))
    return gen.updated(**overrides)


def batch_results(tokenizer, sequences, batch_size):
    """MindFormers' result format: a ``{'text_generation_text': [prompt + completion, ...]}`` per batch."""
    return [{"text_generation_text": tokenizer.batch_decode(sequences[b:b + batch_size])}
            for b in range(0, len(sequences), batch_size)]


def generate_batches(model, runner, tokenizer, gen, encoded, prompts, batch_size, echo, streamer=None):
    """Generate ``encoded`` prompts batch by batch (``echo``: print each answer; ``streamer``: batches of one);
    returns prompt + generated ids per prompt and logs the speed line."""
    sequences, total_tokens, total_time, ttfts = [], 0, 0.0, []
    bar = ProgressBar(len(prompts), enabled=len(prompts) > batch_size and streamer is None)
    for start in range(0, len(encoded), batch_size):
        out = generate(model, encoded[start:start + batch_size], gen, streamer=streamer, runner=runner)
        sequences.extend(out.sequences)
        if echo:
            show_answers(prompts[start:start + batch_size], tokenizer.batch_decode(out.new_tokens))
        total_tokens += out.generated_tokens
        total_time += out.total_time
        ttfts.append(out.time_to_first_token)
        bar.update(len(out.sequences), total_tokens)
    speed = total_tokens / total_time if total_time else 0.0
    logger.info("total time: %.2f s; generated tokens: %d tokens; generate speed: %.2f tokens/s; "
                "time to first token: %.3f s (mean over %d batches)", total_time, total_tokens, speed,
                sum(ttfts) / max(len(ttfts), 1), len(ttfts))
    if runner.compile_seconds:
        logger.info("compiled %d graphs (first calls, compile included): %s", len(runner.compile_seconds),
                    ", ".join(f"{k[0]} {k[1:]}: {v:.1f} s" for k, v in runner.compile_seconds.items()))
    return sequences
