"""Checkpoint transforms between layouts (MindSpore's engine, our strategies and checks): bit-exact round trips,
the offline script in both modes, online ``auto_trans_ckpt`` in one process, and every bad input named."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, TINY_CONFIG
from mindkit.checkpoint import read_state, save_state
from mindkit.checkpoint.transform import transform
from mindkit.config import load_yaml
from mindkit.config.sections import MindkitConfig, ParallelConfig
from mindkit.errors import CheckpointError, ConfigError
from mindkit.parallel.strategy import derive_strategy

SCRIPT = os.path.join(REPO, "scripts", "transform_checkpoint.py")


def tiny4_config(**model):
    tree = load_yaml(TINY_CONFIG)
    tree["model"]["model_config"].update({"num_layers": 4, **model})
    return MindkitConfig.from_dict(tree)


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    """A random 4-layer tiny Llama as one .ckpt, and its state."""
    import mindspore as ms
    from mindkit.models import LlamaConfig, LlamaForCausalLM
    ms.set_seed(1)
    model = LlamaForCausalLM(LlamaConfig.from_dict(tiny4_config().model["model_config"]))
    state = {p.name: p.asnumpy() for p in model.get_parameters()}
    path = tmp_path_factory.mktemp("tiny4") / "tiny4.ckpt"
    save_state(state, str(path))
    return str(path), state


@pytest.fixture(scope="module")
def tiny4_yaml(tmp_path_factory):
    yaml = tmp_path_factory.mktemp("yaml") / "tiny4.yaml"
    yaml.write_text(open(TINY_CONFIG).read().replace("num_layers: 2", "num_layers: 4"))
    return yaml


def layout(tmp_path, name, **parallel):
    return derive_strategy(tiny4_config(), ParallelConfig.from_dict(parallel, key="parallel_config"),
                           str(tmp_path / "strategies" / name))


def ranks_of(folder):
    return sorted(d for d in os.listdir(folder) if d.startswith("rank_"))


def assert_same(folder, state):
    back = read_state(str(folder / "rank_0"))
    assert set(back) == set(state)
    for name, value in state.items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value), name


def test_tensor_parallel_1_to_2_to_1_is_bit_exact(tiny4, tmp_path):
    path, state = tiny4
    tp2 = layout(tmp_path, "tp2", model_parallel=2)
    transform(path, str(tmp_path / "tp2"), None, tp2)
    shards = [read_state(str(tmp_path / "tp2" / r)) for r in ranks_of(tmp_path / "tp2")]
    assert len(shards) == 2
    wq = "model.layers.0.attention.wq.weight"
    assert np.array_equal(np.concatenate([s[wq] for s in shards]), state[wq])  # column split: rows
    wo = "model.layers.3.attention.wo.weight"
    assert np.array_equal(np.concatenate([s[wo] for s in shards], axis=1), state[wo])  # row split: columns
    transform(str(tmp_path / "tp2"), str(tmp_path / "back"), tp2, None)
    assert_same(tmp_path / "back", state)


def test_pipeline_4x1_to_tensor_1x2_to_1x1_is_bit_exact(tiny4, tmp_path):
    path, state = tiny4
    pp4, tp2 = layout(tmp_path, "pp4", pipeline_stage=4), layout(tmp_path, "tp2", model_parallel=2)
    transform(path, str(tmp_path / "pp4"), None, pp4)
    stage_names = [set(read_state(str(tmp_path / "pp4" / r))) for r in ranks_of(tmp_path / "pp4")]
    assert [sorted({n.split(".")[2] for n in s if ".layers." in n}) for s in stage_names] == [["0"], ["1"], ["2"],
                                                                                               ["3"]]
    assert "model.tok_embeddings.embedding_weight" in stage_names[0] and "lm_head.weight" in stage_names[3]
    transform(str(tmp_path / "pp4"), str(tmp_path / "tp2"), str(tmp_path / "pp4" / "strategy" / "dst_strategy.ckpt"),
              tp2)
    transform(str(tmp_path / "tp2"), str(tmp_path / "back"), tp2, None)
    assert_same(tmp_path / "back", state)


def test_uneven_stages_1_3_to_2_2_from_per_stage_strategy_folders(tiny4, tmp_path):
    path, state = tiny4
    layout(tmp_path, "s13", pipeline_stage=[1, 3])
    layout(tmp_path, "s22", pipeline_stage=[2, 2])
    folder = lambda name: str(tmp_path / "strategies" / name / "stages")  # noqa: E731  per-stage files, merged
    transform(path, str(tmp_path / "s13"), None, folder("s13"))
    assert len(read_state(str(tmp_path / "s13" / "rank_1"))) == 1 + 3 * 9 + 1  # layers 1-3, norm, head
    transform(str(tmp_path / "s13"), str(tmp_path / "s22"), folder("s13"), folder("s22"))
    assert len(read_state(str(tmp_path / "s22" / "rank_1"))) == 2 * 9 + 2
    transform(str(tmp_path / "s22"), str(tmp_path / "back"), folder("s22"), None)
    assert_same(tmp_path / "back", state)


def test_safetensors_source_transforms_to_safetensors(tiny4, tmp_path):
    path, state = tiny4
    src = tmp_path / "src.safetensors"
    save_state(state, str(src))
    tp2 = layout(tmp_path, "tp2", model_parallel=2)
    transform(str(src), str(tmp_path / "tp2"), None, tp2)
    assert all(f.endswith(".safetensors") for r in ranks_of(tmp_path / "tp2")
               for f in os.listdir(tmp_path / "tp2" / r))
    transform(str(tmp_path / "tp2"), str(tmp_path / "back"), tp2, None)
    assert_same(tmp_path / "back", state)


def test_tied_embedding_goes_to_first_and_last_stage(tmp_path):
    import mindspore as ms
    from mindkit.models import LlamaConfig, LlamaForCausalLM
    ms.set_seed(2)
    config = tiny4_config(tie_word_embeddings=True)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config.model["model_config"]))
    state = {p.name: p.asnumpy() for p in model.get_parameters()}
    save_state(state, str(tmp_path / "tied.ckpt"))
    pp2 = derive_strategy(config, ParallelConfig.from_dict({"pipeline_stage": 2}, key="p"), str(tmp_path / "s"))
    transform(str(tmp_path / "tied.ckpt"), str(tmp_path / "pp2"), None, pp2)
    emb = "model.tok_embeddings.embedding_weight"
    for rank in ("rank_0", "rank_1"):
        assert np.array_equal(read_state(str(tmp_path / "pp2" / rank))[emb], state[emb])
    transform(str(tmp_path / "pp2"), str(tmp_path / "back"), pp2, None)
    assert_same(tmp_path / "back", state)


def run_script(*args, cwd):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_script_derives_both_layouts_from_the_model_config(tiny4, tiny4_yaml, tmp_path):
    """The Yuan chore in one command: pipeline stages -> tensor parallel, no strategy files, two processes."""
    path, state = tiny4
    yaml = tiny4_yaml
    proc = run_script("--model_config", yaml, "--src_checkpoint", path, "--src_layout", "tp=1",
                      "--dst_layout", "pp=[1,3]", "--dst_checkpoint_dir", tmp_path / "pp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_script("--model_config", yaml, "--src_checkpoint", tmp_path / "pp", "--src_layout", "pp=[1,3]",
                      "--dst_layout", "tp=2", "--dst_checkpoint_dir", tmp_path / "tp", "--transform_process_num", 2,
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "transformed rank 2/2" in proc.stderr and ranks_of(tmp_path / "tp") == ["rank_0", "rank_1"]
    proc = run_script("--src_checkpoint", tmp_path / "tp", "--src_strategy", tmp_path / "tp" / "strategy",
                      "--dst_checkpoint_dir", tmp_path / "back", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same(tmp_path / "back", state)


def test_script_bad_inputs_are_one_line_and_force_deletes_nothing(tiny4, tiny4_yaml, tmp_path):
    path, _ = tiny4
    to = ("--model_config", tiny4_yaml, "--src_checkpoint", path, "--dst_checkpoint_dir")
    proc = run_script(*to, tmp_path / "x", "--dst_layout", "tp:2", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: --dst_layout")
    proc = run_script("--model_config", TINY_CONFIG, *to[2:], tmp_path / "x", "--dst_layout", "tp=2", cwd=tmp_path)
    assert proc.returncode == 1 and "model.layers.2" in proc.stderr and "not in the model" in proc.stderr
    proc = run_script(*to[2:], tmp_path / "x", cwd=tmp_path)
    assert proc.returncode == 1 and "nothing to transform" in proc.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    proc = run_script(*to, tmp_path / "busy", "--dst_layout", "tp=2", cwd=tmp_path)
    assert proc.returncode == 1 and "not empty" in proc.stderr and "--force" in proc.stderr
    proc = run_script(*to, tmp_path / "busy", "--dst_layout", "tp=2", "--force", cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    assert not os.path.exists(tmp_path / "x")


@pytest.fixture
def tp2_checkpoint(tiny4, tmp_path):
    path, _ = tiny4
    tp2 = layout(tmp_path, "tp2", model_parallel=2)
    transform(path, str(tmp_path / "tp2"), None, tp2)
    return tmp_path / "tp2", tp2


def test_rank_folders_with_a_gap_are_refused(tp2_checkpoint, tmp_path):
    src, strategy = tp2_checkpoint
    shutil.move(str(src / "rank_1"), str(src / "rank_2"))
    with pytest.raises(CheckpointError, match="without gaps.*missing rank_1"):
        transform(str(src), str(tmp_path / "out"), strategy, None)


def test_strategy_for_another_rank_count_is_refused(tp2_checkpoint, tmp_path):
    src, _ = tp2_checkpoint
    pp4 = layout(tmp_path, "pp4", pipeline_stage=4)
    with pytest.raises(CheckpointError, match="checkpoint's 2 ranks.*4 stage"):
        transform(str(src), str(tmp_path / "out"), pp4, None)


def test_strategy_of_another_split_is_caught_against_the_model(tp2_checkpoint, tmp_path):
    """Same rank count, different split: the merged shapes disagree with the model definition."""
    from mindkit.runners.build import build_model
    from mindkit.parallel.layout import full_shapes
    src, _ = tp2_checkpoint
    dp2 = layout(tmp_path, "dp2", data_parallel=2)  # 2 ranks, nothing split
    model = build_model(tiny4_config(), load=False)
    with pytest.raises(CheckpointError, match="as the model defines it"):
        transform(str(src), str(tmp_path / "out"), dp2, None, full_shapes=full_shapes(model))


def test_parameter_missing_from_the_strategy_is_named(tiny4, tmp_path):
    path, state = tiny4
    tp2 = layout(tmp_path, "tp2", model_parallel=2)
    extra = dict(state, **{"model.extra_bias": np.zeros(4, np.float32)})
    save_state(extra, str(tmp_path / "extra.ckpt"))
    transform(str(tmp_path / "extra.ckpt"), str(tmp_path / "tp2"), None, tp2)  # unsplit source: no strategy needed
    with pytest.raises(CheckpointError, match="model.extra_bias.*not in the source strategy"):
        transform(str(tmp_path / "tp2"), str(tmp_path / "out"), tp2, None)


def test_destination_equal_to_or_inside_the_source_is_refused(tp2_checkpoint, tmp_path):
    src, strategy = tp2_checkpoint
    for dst in (src, src / "inner"):
        with pytest.raises(CheckpointError, match="apart from the source"):
            transform(str(src), str(dst), strategy, None, force=True)
    assert ranks_of(src) == ["rank_0", "rank_1"] and not (src / "inner").exists()


def test_mixed_ckpt_and_safetensors_in_a_rank_folder_is_refused(tp2_checkpoint, tmp_path):
    src, strategy = tp2_checkpoint
    save_state({"x": np.zeros(2, np.float32)}, str(src / "rank_0" / "other.safetensors"))
    with pytest.raises(CheckpointError, match="one format.*.ckpt and .safetensors"):
        transform(str(src), str(tmp_path / "out"), strategy, None)


def test_pipeline_strategy_missing_a_stage_is_refused(tiny4, tmp_path):
    path, _ = tiny4
    layout(tmp_path, "pp4", pipeline_stage=4)
    transform(path, str(tmp_path / "pp4"), None, str(tmp_path / "strategies" / "pp4" / "stages"))
    os.remove(tmp_path / "strategies" / "pp4" / "stages" / "stage_2.ckpt")
    with pytest.raises(CheckpointError, match="every stage from 0.*no parameters for stage 2"):
        transform(str(tmp_path / "pp4"), str(tmp_path / "out"), str(tmp_path / "strategies" / "pp4" / "stages"),
                  None)


def test_split_checkpoint_without_strategy_is_refused(tp2_checkpoint, tmp_path):
    src, _ = tp2_checkpoint
    with pytest.raises(CheckpointError, match="src_strategy.*split over 2 ranks"):
        transform(str(src), str(tmp_path / "out"), None, None)


def test_not_enough_disk_space_is_refused_before_writing(tiny4, tmp_path, monkeypatch):
    path, _ = tiny4
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(CheckpointError, match="GiB of free disk space"):
        transform(path, str(tmp_path / "out"), None, layout(tmp_path, "tp2", model_parallel=2))
    assert not (tmp_path / "out").exists()


# ---- online: auto_trans_ckpt ----------------------------------------------------------------------------------------

def predict(args, capsys):
    from mindkit.cli import main
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    return open("text_generation_result.txt", encoding="utf-8").read(), captured.err


def test_auto_trans_ckpt_from_pipeline_shards_predicts_like_the_original(tiny4, tiny_sp_model, tmp_path, capsys,
                                                                           monkeypatch):
    path, _ = tiny4
    monkeypatch.chdir(tmp_path)
    layout(tmp_path, "pp2", pipeline_stage=2)
    stages = str(tmp_path / "strategies" / "pp2" / "stages")
    transform(path, str(tmp_path / "pp2"), None, stages)
    base = ["--config", TINY_CONFIG, "--model.model_config.num_layers=4", "--predict_data", "the cat sat", "a dog",
            f"--processor.tokenizer.vocab_file={tiny_sp_model}", "--output_dir", str(tmp_path / "output")]
    original, _ = predict(base + ["--load_checkpoint", path], capsys)
    online, err = predict(base + ["--load_checkpoint", str(tmp_path / "pp2"), "--auto_trans_ckpt", "True",
                                  "--src_strategy_path_or_dir", stages], capsys)
    assert online == original
    assert (tmp_path / "output" / "transformed_checkpoint" / "pp2" / "rank_0").is_dir()
    again, err = predict(base + ["--load_checkpoint", str(tmp_path / "pp2"), "--auto_trans_ckpt", "True",
                                 "--src_strategy_path_or_dir", stages], capsys)
    assert again == original and "reusing" in err


def test_auto_trans_ckpt_refuses_a_folder_holding_another_transform(tiny4, tiny_sp_model, tmp_path, capsys,
                                                                      monkeypatch):
    path, _ = tiny4
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "output" / "transformed_checkpoint" / "tiny4"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("not a transform")
    from mindkit.cli import main
    code = main(["--config", TINY_CONFIG, "--model.model_config.num_layers=4", "--predict_data", "the cat",
                 f"--processor.tokenizer.vocab_file={tiny_sp_model}", "--output_dir", str(tmp_path / "output"),
                 "--load_checkpoint", path, "--auto_trans_ckpt", "True"])
    err = capsys.readouterr().err
    assert code == 1 and "transformed_checkpoint" in err and "not empty" in err
    assert (mine / "notes.txt").read_text() == "not a transform"


def test_layout_parser_names_the_flag():
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from transform_checkpoint import parse_layout
    assert parse_layout("tp=8,pp=[1,3]", "--dst_layout").pipeline_stage == [1, 3]
    assert parse_layout("mp=2", "--dst_layout").model_parallel == 2
    with pytest.raises(ConfigError, match="--src_layout.*xx"):
        parse_layout("xx=2", "--src_layout")


def test_msrun_tensor_parallel_auto_trans_from_fused_pipeline_shards(tiny4, tiny4_yaml, tiny_sp_model, tmp_path):
    """2 processes, model_parallel=2, separate q/k/v: the checkpoint is 2 pipeline stages of fused w_qkv and
    w_gate_hidden with per-stage strategy files; both ranks write a share of the transform."""
    from test_launcher import single_and_distributed
    from mindkit.checkpoint.fused import match_layout
    path, state = tiny4
    fused_cfg = tiny4_config(qkv_concat=True)
    from mindkit.runners.build import build_model
    from mindkit.parallel.layout import full_shapes
    fused = match_layout(state, full_shapes(build_model(fused_cfg, load=False)), 2)
    assert "model.layers.0.attention.w_qkv.weight" in fused
    save_state(fused, str(tmp_path / "fused.ckpt"))
    stages = derive_strategy(fused_cfg, ParallelConfig.from_dict({"pipeline_stage": 2}, key="p"),
                             str(tmp_path / "strategy_pp2"))
    transform(str(tmp_path / "fused.ckpt"), str(tmp_path / "fused_pp2"), None, stages)
    run = os.path.join(REPO, "run_mindformer.py")
    common = (f"{run} --config {tiny4_yaml} --processor.tokenizer.vocab_file={tiny_sp_model} "
              f"--predict_data 'the cat sat' 'a dog ran far'")
    one, two = single_and_distributed(
        f"{common} --load_checkpoint {path}",
        f"{common} --load_checkpoint {tmp_path / 'fused_pp2'} --auto_trans_ckpt True "
        f"--src_strategy_path_or_dir {tmp_path / 'strategy_pp2' / 'stages'} --transform_process_num 2 "
        f"--use_parallel True --parallel_config.model_parallel 2", 2, tmp_path)
    assert two == one
    logs = tmp_path / "multi" / "output" / "log"
    assert "transformed rank 2/2" in (logs / "rank_1" / "info.log").read_text()
    assert "auto_trans_ckpt" in (logs / "rank_0" / "info.log").read_text()


# ---- the real SmolLM2-135M (slow) -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2_layouts(tmp_path_factory):
    """SmolLM2 GGUF -> .ckpt -> 3-way tensor parallel (9 heads, 3 KV heads: split by 3) -> 2 pipeline stages -> one
    file again, with the offline script deriving every layout from the model config."""
    from conftest import SMOLLM2_CONFIG
    from mindkit.utils.paths import resolve_path
    root = tmp_path_factory.mktemp("smollm2")
    gguf = resolve_path(load_yaml(SMOLLM2_CONFIG)["load_checkpoint"], "load_checkpoint")
    state = read_state(gguf)
    save_state(state, str(root / "smollm2.ckpt"))
    steps = [("smollm2.ckpt", "tp=1", "tp=3", "tp3"), ("tp3", "tp=3", "pp=2", "pp2"), ("pp2", "pp=2", "tp=1", "back")]
    for src, src_layout, dst_layout, dst in steps:
        proc = run_script("--model_config", SMOLLM2_CONFIG, "--src_checkpoint", root / src, "--src_layout", src_layout,
                          "--dst_layout", dst_layout, "--dst_checkpoint_dir", root / dst, cwd=root)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return root, state


@pytest.mark.slow
def test_real_model_round_trip_through_tp3_and_pp2_is_bit_exact(smollm2_layouts):
    root, state = smollm2_layouts
    shards = [read_state(str(root / "tp3" / f"rank_{r}")) for r in range(3)]
    assert [s["model.layers.0.attention.wk.weight"].shape[0] for s in shards] == [64] * 3  # one KV head each
    assert_same(root / "back", state)


@pytest.mark.slow
@pytest.mark.parametrize("folder,workers,mesh", [("tp3", 3, "--parallel_config.model_parallel 3"),
                                                 ("pp2", 2, "--parallel_config.pipeline_stage 2")])
def test_real_model_predicts_identically_from_transformed_shards(folder, workers, mesh, smollm2_layouts, tmp_path):
    """The real model's distributed predict check: SmolLM2's 9 heads / 3 KV heads over 3 ranks, its 30 layers as 2
    stages, each rank loading its transformed shard, answers as one process does."""
    from conftest import SMOLLM2_CONFIG
    from test_launcher import single_and_distributed
    root, _ = smollm2_layouts
    base = (f"{os.path.join(REPO, 'run_mindformer.py')} --config {SMOLLM2_CONFIG} --max_new_tokens 10 "
            "--predict_batch_size 2 --predict_data 'What is the capital of France?' 'Name a color.'")
    one, two = single_and_distributed(base, f"{base} --load_checkpoint {root / folder} --use_parallel True {mesh}",
                                      workers, tmp_path, timeout=600)
    assert two == one and "Paris" in one[0]["text_generation_text"][0]
