"""The run config: top-level keys and the sections every run mode shares.

Model sections (``model.model_config``) are typed by the model's own config class (e.g. ``LlamaConfig``), built
through the registry from ``type:``. Sections mindkit passes through untyped (optimizer, datasets, callbacks...)
stay plain dicts.
"""
import dataclasses
import logging
import typing
from typing import Optional, Union

from mindkit.config.schema import Section, check_choice, check_positive
from mindkit.errors import ConfigError

logger = logging.getLogger("mindkit")

RUN_MODES = ("train", "finetune", "eval", "predict", "predict_with_train_model", "serve")
DEVICE_TARGETS = ("CPU", "GPU", "Ascend")

# Top-level keys MindFormers configs carry that mindkit accepts as they are (no warning).
PASSTHROUGH_KEYS = {
    "trainer", "model", "processor", "optimizer", "lr_schedule", "train_dataset", "train_dataset_task",
    "eval_dataset", "eval_dataset_task", "do_eval", "callbacks", "eval_callbacks", "metric", "pet_config",
    "parallel", "runner_wrapper", "micro_batch_interleave_num", "moe_config", "profile", "profile_start_step",
    "profile_stop_step", "init_start_profile", "profile_communication", "profile_memory", "auto_tune",
    "filepath_prefix", "autotune_per_step", "layer_scale", "layer_decay", "lr_scale_factor", "remote_save_url",
    "eval_step_interval", "eval_epoch_interval", "swap_config", "wrapper", "generation_config", "infer",
    "load_ckpt_format", "load_ckpt_async", "remove_redundancy", "use_legacy", "local_rank", "device_num",
    "serve",
}


@dataclasses.dataclass
class ContextConfig(Section):
    mode: int = 1
    device_target: str = "CPU"
    device_id: int = 0
    max_device_memory: Optional[str] = None
    runtime_num_threads: Optional[int] = None
    save_graphs: Union[bool, int] = False
    save_graphs_path: str = "./graph"
    max_call_depth: int = 10000
    enable_graph_kernel: bool = False
    graph_kernel_flags: Optional[str] = None
    enable_compile_cache: bool = False        # keep compiled graphs (mode 0) on disk across runs
    compile_cache_path: Optional[str] = None  # default: {output_dir}/compile_cache

    def validate(self):
        check_choice(f"{self._key}.mode", self.mode, (0, 1))
        check_choice(f"{self._key}.device_target", self.device_target, DEVICE_TARGETS)


@dataclasses.dataclass
class ParallelConfig(Section):
    STRICT: typing.ClassVar[bool] = True
    data_parallel: int = 1
    model_parallel: int = 1
    pipeline_stage: Union[int, list] = 1   # stages, or the layer count of each stage: [2, 2, 3, 3]
    context_parallel: int = 1
    expert_parallel: int = 1
    micro_batch_num: int = 1
    use_seq_parallel: bool = False
    vocab_emb_dp: bool = True
    gradient_aggregation_group: int = 4
    optimizer_shard: Optional[bool] = None
    seq_split_num: int = 1
    select_recompute: bool = False
    pipeline_interleave: bool = False
    pp_interleave_num: int = 1

    def validate(self):
        check_positive(self, "data_parallel", "model_parallel", "context_parallel", "expert_parallel",
                       "micro_batch_num")
        if self.stages < 1:
            raise ConfigError("parallel_config.pipeline_stage", self.pipeline_stage,
                              "a number of stages >= 1, or a list of layer counts")

    @property
    def stages(self):
        return len(self.pipeline_stage) if isinstance(self.pipeline_stage, list) else self.pipeline_stage


@dataclasses.dataclass
class RunnerConfig(Section):
    STRICT: typing.ClassVar[bool] = True
    epochs: int = 1
    batch_size: int = 1
    sink_mode: bool = False
    sink_size: int = 1
    gradient_accumulation_steps: int = 1
    initial_epoch: int = 0
    initial_step: int = 0
    has_trained_epoches: int = 0
    has_trained_steps: int = 0
    num_classes: Optional[int] = None
    stop_step: int = 0

    def validate(self):
        check_positive(self, "epochs", "batch_size", "gradient_accumulation_steps")


@dataclasses.dataclass
class RecomputeConfig(Section):
    STRICT: typing.ClassVar[bool] = True
    recompute: Union[bool, list] = False
    select_recompute: Union[bool, list, dict] = False
    select_comm_recompute: Union[bool, list, dict] = False
    parallel_optimizer_comm_recompute: bool = False
    mp_comm_recompute: bool = True
    recompute_slice_activation: bool = False


@dataclasses.dataclass
class MindkitConfig(Section):
    """The whole run. Unknown top-level keys are kept (in ``extras``) with a warning, as MindFormers does."""
    seed: int = 0
    output_dir: str = "./output"
    run_mode: str = "predict"
    use_parallel: bool = False
    load_checkpoint: Optional[str] = ""
    auto_trans_ckpt: bool = False
    src_strategy_path_or_dir: Optional[str] = ""
    transform_process_num: int = 1
    only_save_strategy: bool = False
    resume_training: Union[bool, str] = False
    input_data: Union[str, list, None] = None
    predict_batch_size: Optional[int] = None
    save_file: str = "text_generation_result.txt"
    adapter_id: Optional[str] = None
    context: ContextConfig = dataclasses.field(default_factory=ContextConfig)
    parallel_config: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)
    runner_config: RunnerConfig = dataclasses.field(default_factory=RunnerConfig)
    recompute_config: RecomputeConfig = dataclasses.field(default_factory=RecomputeConfig)
    sections: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data, key=None):
        data = dict(data)
        typed = {}
        for name, sec_cls in (("context", ContextConfig), ("parallel_config", ParallelConfig),
                              ("runner_config", RunnerConfig), ("recompute_config", RecomputeConfig)):
            typed[name] = sec_cls.from_dict(data.pop(name, None), key=name)
        sections = {k: data.pop(k) for k in list(data) if k in PASSTHROUGH_KEYS}
        plain = {k: v for k, v in data.items() if k in _TOP_FIELDS}
        unknown = sorted(set(data) - set(plain))
        if unknown:
            logger.warning("config: keeping top-level keys mindkit does not use: %s", ", ".join(unknown))
        obj = super().from_dict(plain, key="")
        for name, value in typed.items():
            setattr(obj, name, value)
        obj.sections = sections
        obj.extras = {k: data[k] for k in unknown}
        obj.validate()
        return obj

    def validate(self):
        check_choice("run_mode", self.run_mode, RUN_MODES)
        if self.predict_batch_size is not None:
            check_positive(self, "predict_batch_size")
        check_positive(self, "transform_process_num")

    def section(self, name, required=False):
        value = self.sections.get(name)
        if required and not value:
            raise ConfigError(name, value, "a section in the config")
        return value or {}

    @property
    def model(self):
        return self.section("model", required=True)


_TOP_FIELDS = {f.name for f in dataclasses.fields(MindkitConfig)} - {"context", "parallel_config", "runner_config",
                                                                      "recompute_config", "sections", "extras", "_key"}
