"""mindkit: declarative, YAML-driven large-model pipelines on MindSpore, compatible with MindFormers configs."""
__version__ = "0.1.0"
