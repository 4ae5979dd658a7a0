"""Run under msrun by tests/test_launcher.py: the tiny model's logits with model_parallel (tp) or pipeline_stage (pp)
equal to the world size, for each case in one launch (msrun start-up is most of a launch's cost).
usage: parallel_logits_worker.py CONFIG CKPT OUT_DIR tp|pp:QKV_CONCAT ...   (writes OUT_DIR/<kind>-<qkv>.npy)"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's mindkit
import mindspore as ms  # noqa: E402
import numpy as np
from mindspore import communication

ms.set_device("CPU")
communication.init()

from mindkit.checkpoint import load_weights  # noqa: E402
from mindkit.config import load_yaml  # noqa: E402
from mindkit.models import LlamaConfig, LlamaForCausalLM  # noqa: E402
from mindkit.parallel.pipeline import PipelineStage, stage_layer_counts  # noqa: E402
from mindkit.parallel.tensor_parallel import TPGroup  # noqa: E402

config_path, ckpt, out = sys.argv[1:4]
world, rank = communication.get_group_size(), communication.get_rank()
for case in sys.argv[4:]:
    kind, qkv_concat = case.split(":")
    cfg = LlamaConfig.from_dict({**load_yaml(config_path)["model"]["model_config"], "qkv_concat": qkv_concat == "True"})
    if kind == "tp":
        model = LlamaForCausalLM(cfg, tp=TPGroup(world, rank))
    else:
        counts = tuple(stage_layer_counts(cfg.num_layers, world))
        model = LlamaForCausalLM(cfg, stage=PipelineStage(world, rank, counts))
    load_weights(model, ckpt)
    logits = model.forward_full([[1, 5, 9, 30, 77, 120, 3], [1, 200, 17, 4, 4, 4, 8]]).asnumpy()
    if rank == 0:
        np.save(os.path.join(out, f"{kind}-{qkv_concat}.npy"), logits)
