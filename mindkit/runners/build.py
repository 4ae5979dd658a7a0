"""From a MindkitConfig to ready parts: the MindSpore context, the tokenizer, the model with its weights."""
import logging
import os

import numpy as np

from mindkit import registry
from mindkit.checkpoint import load_weights
from mindkit.errors import ConfigError
from mindkit.config.sections import ParallelConfig
from mindkit.models.layers import no_random_init
from mindkit.ops.aot import set_threads as set_kernel_threads
from mindkit.parallel.mesh import Mesh
from mindkit.parallel.pipeline import PipelineStage, stage_layer_counts
from mindkit.parallel.tensor_parallel import TPGroup
from mindkit.utils.paths import resolve_path

logger = logging.getLogger("mindkit")


def check_supported(config):
    pc = config.parallel_config
    if config.use_parallel and sum(d > 1 for d in (pc.data_parallel, pc.model_parallel, pc.stages)) > 1:
        raise ConfigError("parallel_config", f"data_parallel={pc.data_parallel}, model_parallel={pc.model_parallel}, "
                          f"pipeline_stage={pc.pipeline_stage}", "at most one of them above 1 (combining data, "
                          "tensor and pipeline parallelism is not built yet)")


def start_run(config):
    """What every run mode does first: refuse what is not built, set up MindSpore, join the mesh, open the logs.
    Returns the Mesh."""
    from mindkit.utils.log import setup_file_logging
    check_supported(config)
    setup_context(config)
    mesh = Mesh.from_config(config)
    setup_file_logging(config.output_dir, mesh.rank)
    return mesh


def setup_context(config, seed=True):
    """MindSpore's device and dispatch settings for ``config``; ``seed``: also seed MindSpore and NumPy with
    ``config.seed``."""
    import mindspore as ms
    ctx = config.context
    try:
        ms.set_device(ctx.device_target, ctx.device_id)
    except (RuntimeError, ValueError) as e:
        raise ConfigError("context.device_target", ctx.device_target, "a device this MindSpore build supports",
                          hint=str(e).splitlines()[0][:160]) from None
    if ctx.runtime_num_threads:
        ms.set_context(runtime_num_threads=ctx.runtime_num_threads)
    # mindkit's kernels (mindkit.ops) use as many threads; ranks sharing a machine under msrun share its cores
    cores, ranks = os.cpu_count() or 1, max(1, int(os.environ.get("MS_WORKER_NUM", "1")))
    set_kernel_threads(ctx.runtime_num_threads or cores // min(ranks, cores))
    if ctx.enable_graph_kernel:  # fuses element-wise kernels of compiled (mode 0) graphs
        ms.set_context(enable_graph_kernel=True, **({"graph_kernel_flags": ctx.graph_kernel_flags}
                                                    if ctx.graph_kernel_flags else {}))
    if ctx.enable_compile_cache:
        path = ctx.compile_cache_path or os.path.join(config.output_dir, "compile_cache")
        ms.set_context(enable_compile_cache=True, compile_cache_path=path)
    # Op-by-op (mode 1) dispatch on CPU is ~9x faster with blocking launches, which make compiled graphs (mode 0)
    # ~3x slower (measured, ../shared/REAL_MODEL.md); mode 0 compiles prefill and decode, so it does without.
    # launch_blocking() silently does nothing once any op has run: this must come before the first op.
    # Pipeline stages always run op by op (mindkit.models.causal_lm.Handoff).
    op_by_op = ctx.mode == 1 or (config.use_parallel and config.parallel_config.stages > 1)
    if ctx.device_target == "CPU" and op_by_op:
        ms.runtime.launch_blocking()
    if seed:
        ms.set_seed(config.seed)
        np.random.seed(config.seed)


def build_processor(config):
    """The ``processor`` section (default type ``TextProcessor``) with its tokenizer."""
    section = dict(config.section("processor"))
    section.setdefault("type", "TextProcessor")
    return registry.build("processor", section, key="processor")


def build_model_config(config):
    section = config.model.get("model_config")
    if not isinstance(section, dict):
        raise ConfigError("model.model_config", section, "a mapping")
    section = dict(section)
    section.setdefault("type", "LlamaConfig")
    return registry.build("config", section, key="model.model_config")


def checkpoint_path(config, model_config):
    path = config.load_checkpoint or getattr(model_config, "checkpoint_name_or_path", None)
    key = "load_checkpoint" if config.load_checkpoint else "model.model_config.checkpoint_name_or_path"
    if not path:
        raise ConfigError("load_checkpoint", path, "a checkpoint file or folder (.ckpt, .safetensors or .gguf)",
                          hint="mindkit never predicts with silently random weights")
    return resolve_path(path, key), key


# Compute dtypes without MindSpore kernels on a backend (bfloat16 MatMul/Gather do not exist on CPU; bfloat16
# *storage* with float32/float16 compute does work).
UNSUPPORTED_COMPUTE = {"CPU": ("bfloat16",)}


def build_model(config, load=True, mesh=None, random_init=False):
    """The model of ``config`` with its weights (zeros when not ``load``, random when ``random_init``: training from
    scratch); under a mesh with model_parallel > 1, this rank's shard; with ``pet_config``, LoRA adapters."""
    model_config = build_model_config(config)
    device = config.context.device_target
    for key in ("compute_dtype", "layernorm_compute_type", "softmax_compute_type"):
        if getattr(model_config, key, None) in UNSUPPORTED_COMPUTE.get(device, ()):
            raise ConfigError(f"model.model_config.{key}", getattr(model_config, key),
                              f"float32 or float16 on {device} (MindSpore has no {device} bfloat16 kernels)",
                              hint="param_init_type: bfloat16 with compute_dtype: float32 works")
    arch = config.model.get("arch") or {"type": "LlamaForCausalLM"}
    if not isinstance(arch, dict):
        raise ConfigError("model.arch", arch, "a mapping with a 'type' key")
    model_cls = registry.get("model", arch.get("type"), key="model.arch.type")
    path, key = checkpoint_path(config, model_config) if load else (None, None)
    parts = {}
    if mesh and mesh.model_parallel > 1:
        parts["tp"] = TPGroup(mesh.model_parallel, mesh.mp_rank)
    if mesh and mesh.pipeline_stage > 1:
        counts = stage_layer_counts(model_config.num_layers, config.parallel_config.pipeline_stage,
                                    getattr(model_config, "offset", 0))
        parts["stage"] = PipelineStage(mesh.pipeline_stage, mesh.pp_rank, tuple(counts))
    if random_init:
        model = model_cls(model_config, **parts)
    else:
        with no_random_init():
            model = model_cls(model_config, **parts)
    adapters = []
    if config.section("pet_config"):
        from mindkit.models.lora import apply_lora
        adapters = apply_lora(model, config.section("pet_config"))
    if load and config.auto_trans_ckpt:
        from mindkit.checkpoint.auto_transform import transform_for_run
        layout = config.parallel_config if config.use_parallel else ParallelConfig()
        path = transform_for_run(config, path, key, mesh or Mesh(), layout)
    if load:
        load_with_adapters(model, config, model_config, path, key, mesh.rank if mesh else 0, adapters)
    model.set_train(False)
    return model


def load_with_adapters(model, config, model_config, path, key, rank, adapters):
    """Without LoRA, ``path`` holds every weight. With LoRA (MindFormers' convention): the base from
    ``model_config.checkpoint_name_or_path`` and the adapters from ``load_checkpoint``, or one file with both, or
    a base alone (fresh adapters, as a finetune starts)."""
    if not adapters:
        load_weights(model, path, key, rank=rank)
        return
    base_names = [p.name for p in model.get_parameters() if p.name not in set(adapters)]
    base = getattr(model_config, "checkpoint_name_or_path", None)
    if base and config.load_checkpoint:
        load_weights(model, resolve_path(base, "model.model_config.checkpoint_name_or_path"),
                     "model.model_config.checkpoint_name_or_path", rank=rank, names=base_names)
        load_weights(model, path, key, rank=rank, names=adapters)
        return
    from mindkit.checkpoint.headers import checkpoint_header
    from mindkit.checkpoint.io import rank_folder, resolve_checkpoint_file
    file = resolve_checkpoint_file(rank_folder(path, rank, key) or path, key)
    has_adapters = not file.endswith(".gguf") and adapters[0] in checkpoint_header(file)
    load_weights(model, path, key, rank=rank, names=None if has_adapters else base_names)
    if not has_adapters:
        logger.info("LoRA adapters start fresh (%s holds none)", file)
