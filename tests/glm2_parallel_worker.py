"""Run under msrun (2 processes) by tests/test_glm2.py: tiny ChatGLM2 variants split over the two ranks — tensor
parallel, and two pipeline stages — each loading a full checkpoint with MindFormers names (sliced at load); rank 0
saves every variant's logits and KV-cache greedy tokens.  usage: glm2_parallel_worker.py CONFIG CKPT_DIR OUT.npz"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's mindkit

# name -> (model_config overrides, layout)
VARIANTS = {
    "tp-groups2": ({}, "tp"),                                                   # one KV group per rank
    "tp-groups1": ({"multi_query_group_num": 1}, "tp"),                         # both ranks read the one group
    "tp-heads6-groups3": ({"num_attention_heads": 6, "multi_query_group_num": 3}, "tp"),  # heads straddle groups
    "pp-groups2": ({}, "pp"),
}
PROMPTS = [[64, 65, 9, 30, 77, 120, 3, 44, 17], [64, 65, 200, 17, 4]]
NEW_TOKENS = 16


def model_config(config_path, overrides):
    from mindkit.config import load_yaml
    from mindkit.models import ChatGLM2Config
    return ChatGLM2Config.from_dict({**load_yaml(config_path)["model"]["model_config"], "eos_token_id": None,
                                     **overrides})


def main(config_path, ckpt_dir, out):
    import mindspore as ms
    import numpy as np
    from mindspore import communication
    ms.set_device("CPU")
    ms.runtime.launch_blocking()
    communication.init()
    from mindkit.checkpoint import load_weights
    from mindkit.generation import generate
    from mindkit.models import ChatGLM2ForConditionalGeneration
    from mindkit.parallel.pipeline import PipelineStage, stage_layer_counts
    from mindkit.parallel.tensor_parallel import TPGroup
    world, rank = communication.get_group_size(), communication.get_rank()
    results = {}
    for name, (overrides, layout) in VARIANTS.items():
        cfg = model_config(config_path, overrides)
        split = ({"tp": TPGroup(world, rank)} if layout == "tp" else
                 {"stage": PipelineStage(world, rank, tuple(stage_layer_counts(cfg.num_layers, world)))})
        model = ChatGLM2ForConditionalGeneration(cfg, **split)
        load_weights(model, f"{ckpt_dir}/{name}.ckpt")
        results[f"{name}/logits"] = model.forward_full([PROMPTS[0]]).asnumpy()[0]
        tokens = generate(model, PROMPTS, max_new_tokens=NEW_TOKENS, eos_token_id=()).new_tokens
        results[f"{name}/tokens"] = np.asarray(tokens)
        results[f"{name}/kv_heads"] = np.asarray(model.cache_kv_heads)
    if rank == 0:
        np.savez(out, **results)


if __name__ == "__main__":
    main(*sys.argv[1:4])
