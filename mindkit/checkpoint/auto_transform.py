"""``auto_trans_ckpt: True``: reshard ``load_checkpoint`` into this run's layout before loading, as MindFormers does.

The source is a file, a folder of files (taken as unsplit) or ``rank_N/`` folders described by
``src_strategy_path_or_dir`` (a file, or a folder of per-rank/per-stage files merged first). The destination layout is
derived from the model definition and ``parallel_config`` (``mindkit.parallel.strategy.derive_strategy``), so no
strategy file has to be saved by an earlier run. Rank 0 checks and plans; ``transform_process_num`` ranks write
(each its share of the destination ranks); collectives, not marker files, keep the ranks in step. The result lands in
``{output_dir}/transformed_checkpoint/<name>/`` and is reused by a later run that asks for the same transform.
"""
import json
import logging
import os
import time

from mindkit.checkpoint.headers import checkpoint_header
from mindkit.checkpoint.io import read_state, save_state
from mindkit.checkpoint.transform import (MANIFEST, Plan, fingerprint, keep_strategies, merge_strategy,
                                          plan_transform, read_strategy, run_transform, source_ranks, strategy_ranks,
                                          transform_ranks, verify, write_manifest)
from mindkit.parallel.collectives import run_step, share_from_main

logger = logging.getLogger("mindkit")
GO, REUSE = 1, 2


def checkpoint_name(src):
    base = os.path.basename(os.path.normpath(src))
    return os.path.splitext(base)[0] if os.path.isfile(src) else base


def _ckpt_source(src, staged, key):
    """A GGUF source becomes a .ckpt first (MindSpore's transform reads .ckpt and .safetensors)."""
    files = source_ranks(src, key)
    if len(files) == 1 and files[0].endswith(".gguf"):
        os.makedirs(os.path.dirname(staged), exist_ok=True)
        save_state({k: v for k, v in read_state(files[0], key).items() if v is not None}, staged)
        return staged
    return src


def _prepare(config, layout, src, key, work):
    """Rank 0: strategies written, source checked, plan saved for the other ranks; REUSE when the destination
    already holds this very transform."""
    from mindkit.parallel.strategy import derive_strategy
    src_strategy = merge_strategy(config.src_strategy_path_or_dir, os.path.join(work.strategies, "src_strategy"))
    files = source_ranks(src, key)
    names = set(read_strategy(src_strategy)) if src_strategy else set(checkpoint_header(files[0]))
    dst_strategy = derive_strategy(config, layout, os.path.join(work.strategies, "dst"), names=names)
    per_stage, stages = strategy_ranks(read_strategy(dst_strategy, "dst_strategy"))
    light = Plan(files, work.dst, src_strategy, dst_strategy, dst_ranks=per_stage * stages)
    manifest = os.path.join(work.dst, MANIFEST)
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as f:
            if json.load(f).get("fingerprint") == fingerprint(light):
                logger.info("auto_trans_ckpt: reusing %s, which holds this transform of %s", work.dst, src)
                return REUSE, light
    plan = plan_transform(src, work.dst, src_strategy, dst_strategy, src_key=key,
                          dst_key="output_dir (its transformed_checkpoint folder)",
                          busy_hint="it holds another transform: remove it, or set another output_dir")
    os.makedirs(work.dst, exist_ok=True)
    with open(work.plan, "w", encoding="utf-8") as f:
        json.dump({"files": plan.files, "src_strategy": src_strategy, "dst_strategy": dst_strategy,
                   "dst_ranks": plan.dst_ranks}, f)
    return GO, plan


def _read_plan(work):
    with open(work.plan, encoding="utf-8") as f:
        saved = json.load(f)
    return Plan({int(r): path for r, path in saved["files"].items()}, work.dst, saved["src_strategy"],
                saved["dst_strategy"], dst_ranks=saved["dst_ranks"])


def _write_share(plan, config, mesh):
    """This rank's share of the destination ranks (a lone process may spread them over a process pool)."""
    workers = min(config.transform_process_num, mesh.world_size)
    if mesh.world_size == 1:
        run_transform(plan, config.transform_process_num)
    elif plan.safetensors:  # MindSpore transforms a safetensors folder as a whole
        if mesh.is_main:
            run_transform(plan, config.transform_process_num)
    elif mesh.rank < workers:
        transform_ranks(plan, range(mesh.rank, plan.dst_ranks, workers))


def _finish(plan, t0):
    params = verify(plan)
    keep_strategies(plan)
    write_manifest(plan, time.perf_counter() - t0, params)
    logger.info("auto_trans_ckpt: %s -> %s (%d rank(s), %d parameters) in %.1f s", plan.files[0], plan.dst_dir,
                plan.dst_ranks, params, time.perf_counter() - t0)


class _Work:
    """Where a run's transform goes: ``transformed_checkpoint/<name>/`` and ``merged_strategy/``."""

    def __init__(self, config, src):
        name = checkpoint_name(src)
        root = os.path.join(config.output_dir, "transformed_checkpoint")
        self.dst = os.path.join(root, name)
        self.staged = os.path.join(root, ".staged", name + ".ckpt")
        self.strategies = os.path.join(config.output_dir, "merged_strategy")
        self.plan = os.path.join(self.strategies, "plan.json")


def transform_for_run(config, src, key, mesh, layout):
    """Reshard ``src`` into ``layout`` (a ParallelConfig) on every rank of ``mesh``; returns the folder to load."""
    work, t0 = _Work(config, src), time.perf_counter()

    def prepare():
        if mesh.is_main:
            return _prepare(config, layout, _ckpt_source(src, work.staged, key), key, work)
        return 0, None

    decision, plan = run_step(mesh, "auto_trans_ckpt", prepare)
    if share_from_main(decision, mesh) == REUSE:
        return work.dst
    plan = plan or _read_plan(work)
    run_step(mesh, "auto_trans_ckpt", _write_share, plan, config, mesh)
    run_step(mesh, "auto_trans_ckpt", lambda: _finish(plan, t0) if mesh.is_main else None)
    return work.dst
