from mindkit.config.loader import deep_merge, load_yaml, parse_value, set_path
from mindkit.config.schema import Section, check_choice, check_type
from mindkit.config.sections import ContextConfig, MindkitConfig, ParallelConfig, RecomputeConfig, RunnerConfig

__all__ = ["deep_merge", "load_yaml", "parse_value", "set_path", "Section", "check_choice", "check_type",
           "ContextConfig", "MindkitConfig", "ParallelConfig", "RecomputeConfig", "RunnerConfig"]
