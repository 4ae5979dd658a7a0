"""Config system: YAML + base_config, typed sections, strict-section rules, CLI precedence and overrides."""
import logging

import pytest
import yaml

from conftest import REPO, SMOLLM2_CONFIG, TINY_CONFIG
from mindkit.cli import config_from_args
from mindkit.config import load_yaml, parse_value
from mindkit.config.sections import MindkitConfig
from mindkit.errors import ConfigError
from mindkit.models import LlamaConfig
from mindkit.runners.build import build_model_config

FIXTURE = f"{REPO}/tests/fixtures/mindformers_llama2_7b_predict.yaml"


def write(path, data):
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_base_config_inheritance_relative_to_yaml_folder(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "root.yaml", {"seed": 1, "model": {"model_config": {"hidden_size": 64, "num_layers": 2}}})
    write(tmp_path / "base" / "mid.yaml", {"base_config": ["root.yaml"], "seed": 2,
                                           "model": {"model_config": {"num_layers": 4}}})
    top = write(tmp_path / "top.yaml", {"base_config": ["base/mid.yaml"], "output_dir": "x",
                                        "model": {"model_config": {"num_heads": 8}}})
    tree = load_yaml(top)
    assert tree["seed"] == 2 and tree["output_dir"] == "x"
    assert tree["model"]["model_config"] == {"hidden_size": 64, "num_layers": 4, "num_heads": 8}
    assert "base_config" not in tree


def test_base_config_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", {"base_config": ["b.yaml"]})
    write(tmp_path / "b.yaml", {"base_config": ["a.yaml"]})
    with pytest.raises(ConfigError, match="base_config"):
        load_yaml(str(tmp_path / "a.yaml"))


@pytest.mark.parametrize("text,value", [("3", 3), ("-2", -2), ("1e-5", 1e-5), ("True", True), ("false", False),
                                        ("None", None), ("[1, 2]", [1, 2]), ('{"a": 1}', {"a": 1}),
                                        ("hello", "hello"), ("./path/x.ckpt", "./path/x.ckpt")])
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_flag_precedence_yaml_flags_options_free_form():
    cfg, _ = config_from_args(["--config", TINY_CONFIG, "--seed", "5"])
    assert cfg.seed == 5
    cfg, _ = config_from_args(["--config", TINY_CONFIG, "--seed", "5", "--options", "seed=6"])
    assert cfg.seed == 6
    cfg, _ = config_from_args(["--config", TINY_CONFIG, "--options", "seed=6", "--seed=7"])
    assert cfg.seed == 6  # --options beats an explicit flag wherever it stands
    cfg, _ = config_from_args(["--config", TINY_CONFIG, "--options", "model.model_config.hidden_size=96",
                               "--model.model_config.hidden_size=128"])
    assert cfg.model["model_config"]["hidden_size"] == 128


def test_options_parse_true_as_true():
    """MindFormers parses True as False in --options; fixed here."""
    cfg, _ = config_from_args(["--config", TINY_CONFIG, "--options", "model.model_config.do_sample=True",
                               "model.model_config.top_k=5"])
    assert cfg.model["model_config"]["do_sample"] is True and cfg.model["model_config"]["top_k"] == 5


def test_free_form_with_space_and_equals():
    cfg, _ = config_from_args(["--config", TINY_CONFIG, "--parallel_config.model_parallel", "2",
                               "--model.model_config.theta=500000.0"])
    assert cfg.parallel_config.model_parallel == 2
    assert cfg.model["model_config"]["theta"] == 500000.0


def test_free_form_needs_existing_intermediate_keys():
    with pytest.raises(ConfigError, match="nosuch"):
        config_from_args(["--config", TINY_CONFIG, "--nosuch.section.key=1"])


def test_explicit_flags_map_to_config_keys():
    cfg, _ = config_from_args([
        "--config", TINY_CONFIG, "--run_mode", "predict", "--mode", "0", "--device_target", "CPU",
        "--device_id", "1", "--use_parallel", "false", "--load_checkpoint", "x.ckpt", "--auto_trans_ckpt", "True",
        "--src_strategy_path_or_dir", "s/", "--transform_process_num", "2", "--only_save_strategy", "TRUE",
        "--resume_training", "last.ckpt", "--predict_data", "a b", "c", "--predict_batch_size", "3",
        "--train_dataset_dir", "/d", "--eval_dataset_dir", "/e", "--seed", "9", "--output_dir", "out",
        "--epochs", "4", "--batch_size", "2", "--gradient_accumulation_steps", "3", "--sink_mode", "False",
        "--num_samples", "10", "--do_sample", "True"])
    assert (cfg.context.mode, cfg.context.device_id, cfg.use_parallel) == (0, 1, False)
    assert (cfg.load_checkpoint, cfg.auto_trans_ckpt, cfg.src_strategy_path_or_dir) == ("x.ckpt", True, "s/")
    assert (cfg.transform_process_num, cfg.only_save_strategy, cfg.resume_training) == (2, True, "last.ckpt")
    assert cfg.input_data == ["a b", "c"] and cfg.predict_batch_size == 3
    assert cfg.sections["train_dataset"]["data_loader"] == {"dataset_dir": "/d", "num_samples": 10}
    assert cfg.sections["eval_dataset"]["data_loader"] == {"dataset_dir": "/e", "num_samples": 10}
    assert (cfg.seed, cfg.output_dir) == (9, "out")
    rc = cfg.runner_config
    assert (rc.epochs, rc.batch_size, rc.gradient_accumulation_steps, rc.sink_mode) == (4, 2, 3, False)
    assert cfg.model["model_config"]["do_sample"] is True


@pytest.mark.parametrize("value", ["yes", "1", "maybe"])
def test_booleans_must_be_true_or_false(value):
    with pytest.raises(ConfigError, match="use_parallel"):
        config_from_args(["--config", TINY_CONFIG, "--use_parallel", value])


def test_unknown_run_mode():
    with pytest.raises(ConfigError, match="run_mode.*'serving'"):
        config_from_args(["--config", TINY_CONFIG, "--run_mode", "serving"])


@pytest.mark.parametrize("section,key", [("parallel_config", "model_paralel"), ("runner_config", "epoch"),
                                         ("recompute_config", "recomput")])
def test_strict_sections_reject_unknown_keys(tmp_path, section, key):
    tree = load_yaml(TINY_CONFIG)
    tree.setdefault(section, {})[key] = 1
    with pytest.raises(ConfigError) as e:
        MindkitConfig.from_dict(tree)
    assert f"{section}.{key}" in str(e.value)


def test_unknown_top_level_and_model_keys_are_kept_with_a_warning(caplog):
    tree = load_yaml(TINY_CONFIG)
    tree["my_extra"] = {"x": 1}
    tree["model"]["model_config"]["use_rope_slice"] = True
    logger = logging.getLogger("mindkit")  # the CLI stops propagation to the root logger: listen on ours
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="mindkit"):
            cfg = MindkitConfig.from_dict(tree)
            mcfg = build_model_config(cfg)
    finally:
        logger.removeHandler(caplog.handler)
    assert cfg.extras == {"my_extra": {"x": 1}} and mcfg.extras == {"use_rope_slice": True}
    assert "my_extra" in caplog.text and "use_rope_slice" in caplog.text


@pytest.mark.parametrize("override,key", [
    ("--parallel_config.model_parallel=two", "parallel_config.model_parallel"),
    ("--runner_config.epochs=1.5", "runner_config.epochs"),
    ("--context.mode=3", "context.mode"),
    ("--context.device_target=TPU", "context.device_target"),
    ("--use_parallel=yes", "use_parallel"),
])
def test_wrong_type_or_value_names_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        config_from_args(["--config", TINY_CONFIG, override])
    assert key in str(e.value)


@pytest.mark.parametrize("key,value", [("num_layers", "abc"), ("hidden_size", 65), ("compute_dtype", "float8"),
                                       ("n_kv_heads", 3), ("do_sample", "yes")])
def test_model_config_validation(key, value):
    cfg, _ = config_from_args(["--config", TINY_CONFIG, f"--model.model_config.{key}={value}"])
    with pytest.raises(ConfigError) as e:
        build_model_config(cfg)
    assert f"model.model_config.{key}" in str(e.value)


def test_ffn_width_rule_matches_mindformers():
    assert LlamaConfig.from_dict({"hidden_size": 4096, "num_heads": 32, "multiple_of": 256}).ffn_hidden_size == 11008
    assert LlamaConfig.from_dict({"hidden_size": 576, "num_heads": 9, "intermediate_size": 1536}).ffn_hidden_size \
        == 1536
    c = LlamaConfig.from_dict({"hidden_size": 8192, "num_heads": 64, "multiple_of": 4096,
                               "ffn_dim_multiplier": 1.3})
    assert c.ffn_hidden_size == 28672  # Llama 2 70B


def test_mindformers_llama2_predict_yaml_loads_unedited(tmp_path):
    cfg, _ = config_from_args(["--config", FIXTURE, "--device_target", "CPU", "--use_parallel", "False"])
    assert cfg.run_mode == "predict" and cfg.parallel_config.data_parallel == 8
    assert cfg.runner_config.sink_size == 2 and cfg.recompute_config.mp_comm_recompute is True
    mcfg = build_model_config(cfg)
    assert (mcfg.hidden_size, mcfg.ffn_hidden_size, mcfg.compute_dtype) == (4096, 11008, "float16")
    assert set(mcfg.extras) == {"scaling_factor", "extend_method"} and mcfg.offset == 0


def test_shipped_configs_validate():
    for path in (SMOLLM2_CONFIG, TINY_CONFIG, f"{REPO}/configs/llama2/predict_llama2_7b.yaml"):
        cfg, _ = config_from_args(["--config", path])
        assert build_model_config(cfg).num_layers > 0
