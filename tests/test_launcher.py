"""scripts/msrun_launcher.sh: MindFormers' argument forms, intact quoting, and real 2-process data-parallel
predict through msrun on CPU (results equal the single-process run, in input order)."""
import ast
import os
import socket
import subprocess

import pytest

from conftest import REPO, TINY_CONFIG

LAUNCHER = os.path.join(REPO, "scripts", "msrun_launcher.sh")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, cwd, timeout=300):
    return subprocess.run(["bash", LAUNCHER, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("count", [0, 3, 4, 5, 7, 8, 10])
def test_wrong_argument_count_prints_usage(count, tmp_path):
    proc = launch(["x"] * count, tmp_path, timeout=30)
    assert proc.returncode != 0
    assert f"expected 1, 2, 6 or 9 arguments, got {count}" in proc.stderr and "WORKER_NUM" in proc.stderr


def test_bad_join_value_is_refused(tmp_path):
    proc = launch(["run_mindformer.py", "2", "8118", "log", "yes", "100"], tmp_path, timeout=30)
    assert proc.returncode != 0 and "JOIN must be True or False" in proc.stderr


def tiny_cmd(tiny_ckpt, tiny_sp_model, prompts, extra=""):
    quoted = " ".join(f"'{p}'" for p in prompts)
    return (f"{os.path.join(REPO, 'run_mindformer.py')} --config {TINY_CONFIG} --load_checkpoint {tiny_ckpt} "
            f"--processor.tokenizer.vocab_file={tiny_sp_model} --predict_batch_size 2 --predict_data {quoted} {extra}")


def results(folder):
    return ast.literal_eval((folder / "text_generation_result.txt").read_text(encoding="utf-8"))


def single_and_distributed(single_cmd, distributed_cmd, workers, tmp_path, timeout=300):
    """Run ``single_cmd`` in one process and ``distributed_cmd`` through msrun; return both results files."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    single.mkdir(), multi.mkdir()
    proc = launch([single_cmd, "1"], single, timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = launch([distributed_cmd, str(workers), str(free_port()), "output/msrun_log", "True", str(timeout - 60)],
                  multi, timeout)
    logs = "".join((multi / "output" / "msrun_log" / f).read_text(errors="replace")
                   for f in os.listdir(multi / "output" / "msrun_log"))
    assert proc.returncode == 0, logs[-3000:]
    return results(single), results(multi)


PROMPTS = ["the cat sat on the mat", "a dog ran far away", "big red car", "the sun and the moon", "one two three"]


def test_one_worker_runs_in_process_with_prompts_intact(tiny_ckpt, tiny_sp_model, tmp_path):
    proc = launch([tiny_cmd(tiny_ckpt, tiny_sp_model, PROMPTS[:3]), "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    texts = [t for r in results(tmp_path) for t in r["text_generation_text"]]
    assert [t[:len(p)] for t, p in zip(texts, PROMPTS)] == PROMPTS[:3]  # "a dog ran far away" stayed one prompt


def test_data_parallel_two_processes_equal_single_process(tiny_ckpt, tiny_sp_model, tmp_path):
    one, two = single_and_distributed(
        tiny_cmd(tiny_ckpt, tiny_sp_model, PROMPTS),
        tiny_cmd(tiny_ckpt, tiny_sp_model, PROMPTS, "--use_parallel True --parallel_config.data_parallel 2"),
        2, tmp_path)
    flat = lambda rs: [t for r in rs for t in r["text_generation_text"]]  # noqa: E731
    assert flat(two) == flat(one)
    assert [len(r["text_generation_text"]) for r in two] == [2, 1, 2]   # shares 3 + 2, batches of 2
    assert "generate speed" in (tmp_path / "multi" / "output" / "log" / "rank_1" / "info.log").read_text()


def test_a_failing_rank_fails_the_job_with_its_error(tiny_ckpt, tiny_sp_model, tmp_path):
    plugin = tmp_path / "fail_on_rank1.py"
    plugin.write_text(
        "import os\n"
        "from mindkit.registry import register\n"
        "from mindkit.tokenizers import LlamaTokenizer\n"
        "@register('tokenizer')\n"
        "class FailOnRank1(LlamaTokenizer):\n"
        "    def encode(self, text, add_special_tokens=True):\n"
        "        if os.environ.get('RANK_ID') == '1':\n"
        "            raise RuntimeError('rank 1 is broken')\n"
        "        return super().encode(text, add_special_tokens)\n")
    cmd = tiny_cmd(tiny_ckpt, tiny_sp_model, PROMPTS, f"--use_parallel True --parallel_config.data_parallel 2 "
                   f"--register_path {plugin} --processor.tokenizer.type=FailOnRank1")
    proc = launch([cmd, "2", str(free_port()), "output/msrun_log", "True", "60"], tmp_path, timeout=200)
    assert proc.returncode != 0
    worker1 = (tmp_path / "output" / "msrun_log" / "worker_1.log").read_text(errors="replace")
    assert "error: internal error RuntimeError: rank 1 is broken" in worker1
    assert not (tmp_path / "text_generation_result.txt").exists()


def test_tensor_parallel_two_processes_equal_single_process(tiny_ckpt, tiny_sp_model, tmp_path):
    """model_parallel=2 through the CLI, fused projections and compiled steps: column/row-split projections,
    vocab-split embedding and head, 2 of 4 heads per rank. (Separate projections op by op: the logits test and
    test_tp2_loads_a_distributed_checkpoint_of_matching_layout.)"""
    fused = "--model.model_config.qkv_concat=True --mode 0"
    one, two = single_and_distributed(
        tiny_cmd(tiny_ckpt, tiny_sp_model, PROMPTS[:3], fused),
        tiny_cmd(tiny_ckpt, tiny_sp_model, PROMPTS[:3],
                 f"{fused} --use_parallel True --parallel_config.model_parallel 2"), 2, tmp_path)
    assert two == one


def test_parallel_logits_match_single_process(tiny_ckpt, tmp_path):
    """Logits of 2-way tensor parallelism (separate and fused projections) and of 2 pipeline stages, one launch."""
    import numpy as np
    from mindkit.checkpoint import load_weights
    from mindkit.config import load_yaml
    from mindkit.models import LlamaConfig, LlamaForCausalLM
    worker = os.path.join(REPO, "tests", "parallel_logits_worker.py")
    cases = [("tp", False), ("tp", True), ("pp", False)]
    proc = launch([f"{worker} {TINY_CONFIG} {tiny_ckpt} {tmp_path} " + " ".join(f"{k}:{q}" for k, q in cases), "2",
                   str(free_port()), str(tmp_path / "log"), "True", "240"], tmp_path)
    assert proc.returncode == 0, "".join(p.read_text(errors="replace") for p in (tmp_path / "log").iterdir())[-3000:]
    for kind, qkv_concat in cases:
        cfg = LlamaConfig.from_dict({**load_yaml(TINY_CONFIG)["model"]["model_config"], "qkv_concat": qkv_concat})
        model = LlamaForCausalLM(cfg)
        load_weights(model, tiny_ckpt)
        single = model.forward_full([[1, 5, 9, 30, 77, 120, 3], [1, 200, 17, 4, 4, 4, 8]]).asnumpy()
        assert np.abs(np.load(tmp_path / f"{kind}-{qkv_concat}.npy") - single).max() < 1e-4, (kind, qkv_concat)


def test_tp2_strategy_drives_mindspore_transform_to_the_shards_the_run_loads(tiny_ckpt, tiny_sp_model, tmp_path):
    """The strategy a model_parallel=2 run writes, given to mindspore.transform_checkpoints with the full
    checkpoint, yields per-rank shards identical to the slices the TP=2 run loads."""
    import shutil
    import mindspore as ms
    import numpy as np
    from mindkit.checkpoint import read_state
    from mindkit.config import load_yaml
    from mindkit.models import LlamaConfig, LlamaForCausalLM
    from mindkit.parallel.layout import param_layouts, shard
    from mindkit.parallel.tensor_parallel import TPGroup
    cmd = tiny_cmd(tiny_ckpt, tiny_sp_model, ["x"], "--use_parallel True --parallel_config.model_parallel 2 "
                   "--only_save_strategy True")
    proc = launch([cmd, "2", str(free_port()), "output/msrun_log", "True", "240"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    strategy = tmp_path / "output" / "strategy" / "ckpt_strategy_rank_1.ckpt"
    src = tmp_path / "full" / "rank_0"
    src.mkdir(parents=True)
    shutil.copy(tiny_ckpt, src / "full.ckpt")
    ms.transform_checkpoints(str(tmp_path / "full"), str(tmp_path / "tp2"), "tiny", None, str(strategy))
    full = read_state(tiny_ckpt)
    cfg = LlamaConfig.from_dict(load_yaml(TINY_CONFIG)["model"]["model_config"])
    for rank in (0, 1):
        layouts = param_layouts(LlamaForCausalLM(cfg, tp=TPGroup(2, rank)))
        shards = read_state(str(tmp_path / "tp2" / f"rank_{rank}"))
        assert set(shards) == set(full)
        for name, (axis, tp) in layouts.items():
            assert np.array_equal(shards[name], shard(full[name], axis, tp)), (rank, name)


def test_tp2_loads_a_distributed_checkpoint_of_matching_layout(tiny_ckpt, tiny_sp_model, tmp_path):
    """load_checkpoint/rank_{r}/ holding each rank's slices (as a TP=2 training run leaves them)."""
    from mindkit.checkpoint import read_state, save_state
    from mindkit.config import load_yaml
    from mindkit.models import LlamaConfig, LlamaForCausalLM
    from mindkit.parallel.layout import param_layouts, shard
    from mindkit.parallel.tensor_parallel import TPGroup
    full = read_state(tiny_ckpt)
    cfg = LlamaConfig.from_dict(load_yaml(TINY_CONFIG)["model"]["model_config"])
    for rank in (0, 1):
        layouts = param_layouts(LlamaForCausalLM(cfg, tp=TPGroup(2, rank)))
        (tmp_path / "dist" / f"rank_{rank}").mkdir(parents=True)
        save_state({n: shard(full[n], *layouts[n]) for n in full},
                   str(tmp_path / "dist" / f"rank_{rank}" / f"tiny_rank_{rank}.ckpt"))
    one, two = single_and_distributed(
        tiny_cmd(tiny_ckpt, tiny_sp_model, PROMPTS[:2]),
        tiny_cmd(str(tmp_path / "dist"), tiny_sp_model, PROMPTS[:2],
                 "--use_parallel True --parallel_config.model_parallel 2"), 2, tmp_path)
    assert two == one
    assert "rank_1/tiny_rank_1.ckpt" in (tmp_path / "multi" / "output" / "log" / "rank_1" / "info.log").read_text()


def test_pipeline_two_stages_equal_single_process(tiny_ckpt, tiny_sp_model, tmp_path):
    """pipeline_stage as a list of layer counts, asked for compiled steps (stages run op by op): rank 0 runs layer 0
    and hands its activations to rank 1, which runs layer 1 and the head. (An even pipeline_stage=2: the logits test
    and the server's.)"""
    one, two = single_and_distributed(
        tiny_cmd(tiny_ckpt, tiny_sp_model, PROMPTS[:3], "--mode 0"),
        tiny_cmd(tiny_ckpt, tiny_sp_model, PROMPTS[:3],
                 "--mode 0 --use_parallel True --parallel_config.pipeline_stage=[1,1]"), 2, tmp_path)
    assert two == one
