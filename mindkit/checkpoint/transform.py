"""Reshard a checkpoint from one parallel layout to another (n→m tensor parallel, pipeline → tensor, uneven stages).

MindSpore moves the tensors (``transform_checkpoint_by_rank``, ``transform_checkpoints``, ``merge_pipeline_strategys``);
this module arranges folders and strategy files and checks before and after, so a wrong input is a clear message and
not a silently wrong checkpoint: source ranks contiguous, one file format per folder, the strategy describing as many
ranks as the checkpoint has and every parameter it holds, free disk space, and afterwards every destination rank
holding every parameter of its stage with the right shape. The source is never written; a non-empty destination is
refused unless ``force``; a destination is never deleted.
"""
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import tempfile
import time

import numpy as np

from mindkit.checkpoint.headers import checkpoint_header
from mindkit.checkpoint.io import resolve_checkpoint_file
from mindkit.errors import CheckpointError

logger = logging.getLogger("mindkit")
MANIFEST = "transform.json"


# ---- reading checkpoints and strategies -----------------------------------------------------------------------------

def source_ranks(src, key="src_checkpoint"):
    """rank → file: ``src/rank_N/`` folders (the last file in name order each, as MindSpore picks), or {0: src} for
    one file or a folder of files."""
    if not src or not os.path.exists(src):
        raise CheckpointError(key, src, "an existing checkpoint file, or a folder of them or of rank_N folders")
    ranks = {}
    if os.path.isdir(src):
        for d in os.listdir(src):
            m = re.fullmatch(r"rank_(\d+)", d)
            if m and os.path.isdir(os.path.join(src, d)):
                ranks[int(m.group(1))] = os.path.join(src, d)
    if not ranks:
        return {0: resolve_checkpoint_file(src, key)}
    if sorted(ranks) != list(range(len(ranks))):
        gaps = sorted(set(range(max(ranks) + 1)) - set(ranks))
        raise CheckpointError(key, src, f"rank_0 ... rank_{max(ranks)} folders without gaps",
                              hint="missing " + ", ".join(f"rank_{r}" for r in gaps))
    return {r: resolve_checkpoint_file(ranks[r], f"{key} ({ranks[r]})") for r in sorted(ranks)}


@dataclasses.dataclass
class Split:
    """One parameter's entry in a strategy: device matrix, tensor map, and the pipeline stages that hold it."""
    dev_matrix: list
    tensor_map: list
    stages: list

    def parts(self, ndim):
        """How many slices each axis is cut into."""
        return [1 if k < 0 else self.dev_matrix[len(self.dev_matrix) - 1 - k] for k in self.tensor_map[:ndim]]


def read_strategy(path, key="src_strategy"):
    """param → Split from a strategy file (protobuf or .json; merged pipeline files name params ``{stage}-{name}``)."""
    import mindspore as ms
    if not os.path.isfile(path):
        raise CheckpointError(key, path, "an existing strategy file")
    try:
        layouts = ms.build_searched_strategy(path)
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(key, path, "a MindSpore strategy file (ParallelStrategyMap protobuf, or .json)",
                              hint=str(e).splitlines()[0][:160]) from None
    out = {}
    for name, layout in layouts.items():
        stage, _, param = name.rpartition("-")
        entry = out.setdefault(param, Split(list(layout.dev_matrix[0].dim), list(layout.tensor_map[0].dim), []))
        entry.stages.append(int(stage) if stage.isdigit() else 0)
    if not out:
        raise CheckpointError(key, path, "a strategy describing at least one parameter")
    return out


def strategy_ranks(strategy, key="strategy"):
    """(devices per stage, stages) of a strategy; None = unsplit, one rank."""
    if strategy is None:
        return 1, 1
    first = next(iter(strategy.values()))
    stages = sorted({s for e in strategy.values() for s in e.stages})
    if stages != list(range(len(stages))):
        missing = sorted(set(range(max(stages) + 1)) - set(stages))
        raise CheckpointError(key, f"pipeline stages {stages}", "every stage from 0 to the last",
                              hint="no parameters for stage " + ", ".join(map(str, missing)))
    return int(np.prod(first.dev_matrix)), len(stages)


def merge_strategy(path, out_file, key="src_strategy_path_or_dir"):
    """A strategy file as is, or a folder of per-rank/per-stage files merged by MindSpore into ``out_file``."""
    if not path:
        return None
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise CheckpointError(key, path, "a strategy file or a folder of them")
    files = sorted(f for f in os.listdir(path) if f.endswith((".ckpt", ".json")))
    if not files:
        raise CheckpointError(key, path, "a folder holding strategy files (.ckpt or .json)")
    if len({os.path.splitext(f)[1] for f in files}) > 1:
        raise CheckpointError(key, path, "strategy files of one format", hint="found both .ckpt and .json files")
    if len(files) == 1:  # nothing to merge (and a merged pipeline file must not be merged again)
        return os.path.join(path, files[0])
    import mindspore as ms
    out_file = os.path.splitext(out_file)[0] + os.path.splitext(files[0])[1]
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    try:
        ms.merge_pipeline_strategys(path, out_file)
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(key, path, "strategy files MindSpore can merge (each recording its pipeline stage)",
                              hint=str(e).splitlines()[0][:160]) from None
    return out_file


# ---- planning: everything checked before a byte is written ---------------------------------------------------------

@dataclasses.dataclass
class Plan:
    files: dict              # source rank -> file
    dst_dir: str
    src_strategy: str = None
    dst_strategy: str = None
    prefix: str = "checkpoint_"
    full_shapes: dict = None  # param -> (full shape, bytes per element)
    dst_layout: dict = None   # param -> Split (None: unsplit)
    dst_ranks: int = 1

    @property
    def safetensors(self):
        return self.files[0].endswith(".safetensors")

    def output_file(self, rank):
        ext = ".safetensors" if self.safetensors else ".ckpt"
        return os.path.join(self.dst_dir, f"rank_{rank}", f"{self.prefix}{rank}{ext}")

    def expected(self, rank):
        """param → local shape the destination ``rank`` must hold."""
        per_stage = int(np.prod(next(iter(self.dst_layout.values())).dev_matrix)) if self.dst_layout else 1
        stage, out = rank // per_stage, {}
        for name, (shape, _) in self.full_shapes.items():
            split = (self.dst_layout or {}).get(name)
            if split is None:
                if self.dst_layout is None:
                    out[name] = shape
                continue
            if stage in split.stages:
                out[name] = tuple(d // p for d, p in zip(shape, split.parts(len(shape))))
        return out


def _same_place(a, b):
    a, b = os.path.realpath(a), os.path.realpath(b)
    return a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep)


def plan_transform(src, dst_dir, src_strategy=None, dst_strategy=None, prefix="checkpoint_", force=False,
                   full_shapes=None, src_key="src_checkpoint", dst_key="dst_checkpoint_dir",
                   busy_hint="pass --force to write into it: files of the same names are replaced, nothing deleted"):
    """Check the source against its strategy and the destination; returns the Plan. ``full_shapes`` (param → shape of
    the whole weight, from a model definition) also checks the source against the model."""
    files = source_ranks(src, src_key)
    if _same_place(src, dst_dir):
        raise CheckpointError(dst_key, dst_dir, "a folder apart from the source checkpoint (not it, inside it or "
                              "around it)", hint=f"source: {src}")
    src_layout = read_strategy(src_strategy, "src_strategy") if src_strategy else None
    dst_layout = read_strategy(dst_strategy, "dst_strategy") if dst_strategy else None
    per_stage, stages = strategy_ranks(src_layout, "src_strategy")
    if src_layout is None and len(files) > 1:
        raise CheckpointError("src_strategy", None, f"a strategy file for a checkpoint split over {len(files)} ranks")
    if not src_strategy and not dst_strategy:
        raise CheckpointError("dst_strategy", None, "a destination layout other than the source's",
                              hint="both are unsplit: there is nothing to transform")
    if len(files) != per_stage * stages:
        raise CheckpointError("src_strategy", src_strategy, f"a strategy for the checkpoint's {len(files)} ranks",
                              hint=f"it describes {stages} stage(s) x {per_stage} device(s) = {per_stage * stages}")
    shapes = {}
    for stage in range(stages):
        rank = stage * per_stage
        for name, (shape, size) in checkpoint_header(files[rank]).items():
            split = (src_layout or {}).get(name)
            if src_layout is not None and (split is None or stage not in split.stages):
                raise CheckpointError(f"{files[rank]}: parameter {name}", "not in the source strategy"
                                      + ("" if split is None else f" for stage {stage}"),
                                      f"every parameter of the checkpoint described by {src_strategy}")
            full = shape if split is None else tuple(d * p for d, p in zip(shape, split.parts(len(shape))))
            if name in shapes and shapes[name][0] != full:
                raise CheckpointError(f"{files[rank]}: parameter {name}", f"shape {full} when merged",
                                      f"shape {shapes[name][0]} as in the other stages")
            shapes[name] = (full, size)
    for name in src_layout or {}:
        if name not in shapes:
            raise CheckpointError(f"{src}: parameter {name}", "missing", f"present, as {src_strategy} describes")
    unknown = sorted(set(shapes) - set(full_shapes)) if full_shapes else []
    if unknown:
        raise CheckpointError(f"{src}: parameter {unknown[0]}", "not in the model", "the parameters the model "
                              "defines", hint=f"{len(unknown)} unknown in all" if len(unknown) > 1 else None)
    for name, shape in (full_shapes or {}).items():
        if name in shapes and shapes[name][0] != tuple(shape):
            raise CheckpointError(f"{src}: parameter {name}", f"shape {shapes[name][0]} when merged",
                                  f"shape {tuple(shape)} as the model defines it",
                                  hint="the source strategy may not be the one the checkpoint was saved with")
    dst_per_stage, dst_stages = strategy_ranks(dst_layout, "dst_strategy")
    plan = Plan(files, dst_dir, src_strategy, dst_strategy, prefix, shapes, dst_layout, dst_per_stage * dst_stages)
    for name in dst_layout or {}:
        if name not in shapes:
            raise CheckpointError(f"{dst_strategy}: parameter {name}", "not in the source checkpoint",
                                  "a destination strategy of the same model as the source")
    _check_destination(plan, force, dst_key, busy_hint)
    return plan


def _check_destination(plan, force, key, busy_hint):
    if os.path.isdir(plan.dst_dir) and os.listdir(plan.dst_dir) and not force:
        raise CheckpointError(key, plan.dst_dir, "an empty or new folder", hint="it is not empty; " + busy_hint)
    need = sum(int(np.prod(shape)) * plan.full_shapes[name][1]
               for r in range(plan.dst_ranks) for name, shape in plan.expected(r).items())
    free = shutil.disk_usage(_existing_parent(plan.dst_dir)).free
    if need * 1.05 > free:
        raise CheckpointError(key, plan.dst_dir, f"{need / 2**30:.2f} GiB of free disk space for the result",
                              hint=f"{free / 2**30:.2f} GiB free")


# ---- running and verifying ------------------------------------------------------------------------------------------

def transform_ranks(plan, ranks):
    """Write destination ``ranks`` of a .ckpt source, each from only the source ranks it needs."""
    import mindspore as ms
    for rank in ranks:
        t0 = time.perf_counter()
        needed = ms.rank_list_for_transform(rank, plan.src_strategy, plan.dst_strategy)
        out = plan.output_file(rank)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        ms.transform_checkpoint_by_rank(rank, {r: plan.files[r] for r in needed}, out, plan.src_strategy,
                                        plan.dst_strategy)
        logger.info("transformed rank %d/%d from source rank(s) %s in %.1f s -> %s", rank + 1, plan.dst_ranks,
                    ",".join(map(str, sorted(needed))), time.perf_counter() - t0, out)


def run_transform(plan, process_num=1, ranks=None):
    """Carry out ``plan`` for destination ``ranks`` (default all), over ``process_num`` processes."""
    ranks = list(range(plan.dst_ranks)) if ranks is None else list(ranks)
    if plan.safetensors:
        _via_ckpt(plan, process_num, ranks)
        return
    chunks = [ranks[i::process_num] for i in range(min(process_num, len(ranks)))]
    if len(chunks) <= 1:
        transform_ranks(plan, ranks)
        return
    from mindkit.utils.log import setup_console_logging  # workers report their ranks' progress too
    with multiprocessing.get_context("spawn").Pool(len(chunks), initializer=setup_console_logging) as pool:
        pool.starmap(transform_ranks, [(plan, c) for c in chunks])


def _via_ckpt(plan, process_num, ranks):
    """safetensors in and out, transformed as .ckpt: MindSpore 2.10's own safetensors transform slices
    input-column (row-parallel) splits of an unsplit source wrongly (found by tests/test_transform.py)."""
    import mindspore as ms
    with tempfile.TemporaryDirectory(prefix=".mindkit_transform_", dir=_existing_parent(plan.dst_dir)) as tmp:
        files = {}
        for rank, path in plan.files.items():
            folder = os.path.join(tmp, "src", f"rank_{rank}")
            ms.safetensors_to_ckpt(path, folder)
            files[rank] = os.path.join(folder, os.path.splitext(os.path.basename(path))[0] + ".ckpt")
        staged = dataclasses.replace(plan, files=files, dst_dir=os.path.join(tmp, "dst"))
        run_transform(staged, process_num, ranks)
        for rank in ranks:
            os.makedirs(os.path.dirname(plan.output_file(rank)), exist_ok=True)
            ms.ckpt_to_safetensors(staged.output_file(rank), os.path.dirname(plan.output_file(rank)))


def _existing_parent(path):
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def verify(plan):
    """Every destination rank holds every parameter of its stage, with the right shape. Returns the parameter count."""
    count = 0
    for rank in range(plan.dst_ranks):
        path = plan.output_file(rank)
        if not os.path.isfile(path):
            raise CheckpointError(plan.dst_dir, f"no {path}", "a file for every destination rank after the transform")
        got, expected = checkpoint_header(path), plan.expected(rank)
        for name, shape in expected.items():
            if name not in got:
                raise CheckpointError(f"{path}: parameter {name}", "missing after the transform", f"shape {shape}")
            if got[name][0] != shape:
                raise CheckpointError(f"{path}: parameter {name}", f"shape {got[name][0]}", f"shape {shape}")
        extra = sorted(set(got) - set(expected))
        if extra:
            logger.info("rank_%d also holds %d parameter(s) its strategy does not describe, whole: %s", rank,
                        len(extra), ", ".join(extra[:3]))
        count += len(got)
    return count


def fingerprint(plan):
    """What a destination was made from: reused when a later run asks for the same transform."""
    def digest(path):
        if not path:
            return None
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    return {"source": {str(r): [os.path.abspath(f), os.path.getsize(f), int(os.path.getmtime(f))]
                       for r, f in plan.files.items()},
            "src_strategy": digest(plan.src_strategy), "dst_strategy": digest(plan.dst_strategy),
            "dst_ranks": plan.dst_ranks}


def write_manifest(plan, seconds, params):
    with open(os.path.join(plan.dst_dir, MANIFEST), "w", encoding="utf-8") as f:
        json.dump({"made_by": "mindkit", "fingerprint": fingerprint(plan), "seconds": round(seconds, 2),
                   "parameters": params}, f, indent=1)


def transform(src, dst_dir, src_strategy=None, dst_strategy=None, prefix="checkpoint_", process_num=1,
              force=False, full_shapes=None):
    """The whole offline transform: plan (all checks), write, verify, record. Strategies may be files or folders of
    per-rank/per-stage files; the destination's is kept in ``dst_dir/strategy/``. Returns the Plan."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        plan = plan_transform(src, dst_dir, merge_strategy(src_strategy, os.path.join(tmp, "src"), "src_strategy"),
                              merge_strategy(dst_strategy, os.path.join(tmp, "dst"), "dst_strategy"), prefix, force,
                              full_shapes)
        os.makedirs(dst_dir, exist_ok=True)
        run_transform(plan, process_num)
        params = verify(plan)
        keep_strategies(plan)
        write_manifest(plan, time.perf_counter() - t0, params)
    logger.info("transformed %s (%d rank(s)) into %s (%d rank(s), %d parameters) in %.1f s", src, len(plan.files),
                dst_dir, plan.dst_ranks, params, time.perf_counter() - t0)
    return plan


def keep_strategies(plan):
    """Copy the destination's strategy next to it (``strategy/dst_strategy.*``), so the result describes itself and
    can be the source of a later transform."""
    if plan.dst_strategy:
        os.makedirs(os.path.join(plan.dst_dir, "strategy"), exist_ok=True)
        kept = os.path.join(plan.dst_dir, "strategy", "dst_strategy" + os.path.splitext(plan.dst_strategy)[1])
        if os.path.abspath(plan.dst_strategy) != os.path.abspath(kept):
            shutil.copyfile(plan.dst_strategy, kept)
        plan.dst_strategy = kept
