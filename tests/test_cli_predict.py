"""run_mindformer.py end to end on the tiny model: results file, output tree, batching, and one-line errors."""
import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO, TINY_CONFIG
from mindkit.cli import main
from mindkit.data.predict_inputs import read_prompts


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def read_results(path="text_generation_result.txt"):
    with open(path, encoding="utf-8") as f:
        return ast.literal_eval(f.read())


def test_predict_batches_with_remainder_and_writes_mindformers_format(tiny_args, capsys, tmp_path):
    prompts = ["the cat sat on the mat", "a dog ran", "big red car"]
    code, out, err = run(tiny_args + ["--predict_data", *prompts, "--predict_batch_size", "2"], capsys)
    assert code == 0, err
    results = read_results()
    assert [len(r["text_generation_text"]) for r in results] == [2, 1]
    texts = [t for r in results for t in r["text_generation_text"]]
    for prompt, text in zip(prompts, texts):
        assert text.startswith(prompt) and len(text) > len(prompt)
    assert "generate speed" in err and "time to first token" in err
    info = tmp_path / "output" / "log" / "rank_0" / "info.log"
    assert info.exists() and "generate speed" in info.read_text()
    assert (tmp_path / "output" / "log" / "rank_0" / "error.log").exists()


def test_batching_does_not_change_greedy_results(tiny_args, capsys):
    prompts = ["the cat sat on the mat and ran far away", "a dog", "big red car on the road"]
    assert run(tiny_args + ["--predict_data", *prompts, "--predict_batch_size", "3"], capsys)[0] == 0
    batched = [t for r in read_results() for t in r["text_generation_text"]]
    assert run(tiny_args + ["--predict_data", *prompts, "--predict_batch_size", "1"], capsys)[0] == 0
    alone = [t for r in read_results() for t in r["text_generation_text"]]
    assert batched == alone


def test_prompt_file_one_per_line_with_literal_newlines(tiny_args, capsys, tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("the cat\\nsat on\n\nred car\n", encoding="utf-8")
    code, out, err = run(tiny_args + ["--predict_data", str(f), "--options", "save_file=res.txt"], capsys)
    assert code == 0, err
    texts = [t for r in read_results("res.txt") for t in r["text_generation_text"]]
    assert len(texts) == 2 and texts[0].startswith("the cat") and texts[1].startswith("red car")
    assert read_prompts(str(f)) == ["the cat\nsat on", "red car"]


def test_register_path_adds_user_classes(tiny_args, capsys, tmp_path):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(
        "from mindkit.registry import register\n"
        "from mindkit.tokenizers import LlamaTokenizer\n"
        "@register('tokenizer')\n"
        "class ShoutingTokenizer(LlamaTokenizer):\n"
        "    def decode(self, ids, skip_special_tokens=True):\n"
        "        return super().decode(ids, skip_special_tokens).upper()\n")
    code, out, err = run(tiny_args + ["--predict_data", "the cat", "--register_path", str(plugin),
                                      "--processor.tokenizer.type=ShoutingTokenizer"], capsys)
    assert code == 0, err
    (text,) = read_results()[0]["text_generation_text"]
    assert text.startswith("THE CAT") and text == text.upper()


def assert_one_line_error(code, err, *needles):
    assert code == 1
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_error_unknown_run_mode(tiny_args, capsys):
    assert_one_line_error(*run(tiny_args + ["--run_mode", "predcit"], capsys)[::2], "run_mode", "predcit")


def test_error_run_mode_not_built_yet(tiny_args, capsys):
    assert_one_line_error(*run(tiny_args + ["--run_mode", "predict_with_train_model"], capsys)[::2], "run_mode",
                          "predict_with_train_model")


def test_error_missing_config_file(capsys, tmp_path):
    assert_one_line_error(*run(["--config", str(tmp_path / "nope.yaml")], capsys)[::2], "nope.yaml")


def test_error_yaml_syntax(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  model_config: [1, 2\n  arch: x\n")
    assert_one_line_error(*run(["--config", str(bad)], capsys)[::2], "bad.yaml", "YAML syntax error", "line")


def test_error_unknown_strict_key(tiny_args, capsys):
    assert_one_line_error(*run(tiny_args + ["--options", "parallel_config.model_paralel=2", "--predict_data", "x"],
                               capsys)[::2], "parallel_config.model_paralel")


def test_error_wrong_type(tiny_args, capsys):
    assert_one_line_error(*run(tiny_args + ["--predict_data", "x", "--model.model_config.num_layers=two"],
                               capsys)[::2], "model.model_config.num_layers", "'two'", "an int")


def test_error_missing_checkpoint(tiny_args, capsys, tmp_path):
    args = tiny_args + ["--predict_data", "x", "--load_checkpoint", str(tmp_path / "missing.ckpt")]
    assert_one_line_error(*run(args, capsys)[::2], "load_checkpoint", "missing.ckpt")


def test_error_no_checkpoint_at_all(tiny_args, capsys):
    assert_one_line_error(*run(tiny_args + ["--predict_data", "x", "--load_checkpoint", ""], capsys)[::2],
                          "load_checkpoint")


def test_error_missing_vocab_file(tiny_args, capsys, tmp_path):
    args = tiny_args + ["--predict_data", "x", f"--processor.tokenizer.vocab_file={tmp_path}/none.model"]
    assert_one_line_error(*run(args, capsys)[::2], "processor.tokenizer.vocab_file", "none.model")


def test_error_empty_prompt_file(tiny_args, capsys, tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("\n  \n")
    assert_one_line_error(*run(tiny_args + ["--predict_data", str(f)], capsys)[::2], "predict_data", "empty.txt")


def test_error_no_prompts(tiny_args, capsys):
    assert_one_line_error(*run(tiny_args, capsys)[::2], "predict_data")


def test_error_prompt_longer_than_seq_length(tiny_args, capsys):
    long_prompt = " ".join(["the big red car"] * 60)
    assert_one_line_error(*run(tiny_args + ["--predict_data", "ok", long_prompt], capsys)[::2],
                          "predict_data[1]", "seq_length (128)")


def test_error_bfloat16_compute_on_cpu(tiny_args, capsys):
    args = tiny_args + ["--predict_data", "x", "--model.model_config.compute_dtype=bfloat16"]
    assert_one_line_error(*run(args, capsys)[::2], "model.model_config.compute_dtype", "bfloat16")


def test_error_mismatched_checkpoint_names_the_parameter(tiny_args, capsys):
    args = tiny_args + ["--predict_data", "x", "--model.model_config.num_layers=3"]
    assert_one_line_error(*run(args, capsys)[::2], "model.layers.2.", "missing")


def test_entrypoint_subprocess_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "run_mindformer.py"), "--config", TINY_CONFIG,
                           "--run_mode", "nope"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: run_mode")


def test_compiled_mode_gives_the_same_results(tiny_args, capsys):
    prompts = ["the cat sat on the mat", "a dog ran", "big red car"]
    assert run(tiny_args + ["--predict_data", *prompts, "--mode", "1"], capsys)[0] == 0
    eager = read_results()
    code, out, err = run(tiny_args + ["--predict_data", *prompts, "--mode", "0"], capsys)
    assert code == 0, err
    assert read_results() == eager
    assert "compiled" in err and "decode" in err


@pytest.mark.parametrize("case", ["prompt_not_utf8", "yaml_not_utf8", "base_config_type", "arch_not_mapping",
                                  "vocab_not_sentencepiece", "vocab_not_gguf", "chat_template_syntax",
                                  "register_path_not_py", "register_path_import_error", "save_file_folder_missing",
                                  "mesh_bigger_than_world", "parallel_combination_not_yet", "auto_trans_ckpt", "top_p_out_of_range"])
def test_more_bad_inputs_get_one_line(case, tiny_args, capsys, tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff\xfe\x00not text")
    args = tiny_args + ["--predict_data", "the cat"]
    needle = {
        "prompt_not_utf8": (["--predict_data", str(bad)], "UTF-8"),
        "yaml_not_utf8": (["--config", str(bad)], "UTF-8"),
        "base_config_type": (["--config", str(_yaml(tmp_path, "base_config: 5\n"))], "base_config"),
        "arch_not_mapping": (["--model.arch=abc"], "model.arch"),
        "vocab_not_sentencepiece": ([f"--processor.tokenizer.vocab_file={bad}"], "sentencepiece"),
        "vocab_not_gguf": ([f"--processor.tokenizer.vocab_file={bad}", "--processor.tokenizer.type=GGUFTokenizer"],
                           "GGUF"),
        "chat_template_syntax": (["--options", "processor.use_chat_template=True",
                                  "processor.tokenizer.chat_template={% for %}"], "chat_template"),
        "register_path_not_py": (["--register_path", str(bad)], "register_path"),
        "register_path_import_error": (["--register_path", str(_yaml(tmp_path, "import no_such_module_x\n",
                                                                     "plugin.py"))], "no_such_module_x"),
        "save_file_folder_missing": (["--options", f"save_file={tmp_path}/no/such/dir/out.txt"], "save_file"),
        "mesh_bigger_than_world": (["--use_parallel", "True", "--parallel_config.data_parallel", "2"],
                                   "data_parallel=2 x model_parallel=1 x pipeline_stage=1 = 2"),
        "parallel_combination_not_yet": (["--use_parallel", "True", "--parallel_config.data_parallel", "2",
                                          "--parallel_config.pipeline_stage", "2"], "at most one of them above 1"),
        "auto_trans_ckpt": (["--auto_trans_ckpt", "True", "--src_strategy_path_or_dir", "no/such/strategy"],
                            "src_strategy_path_or_dir"),
        "top_p_out_of_range": (["--model.model_config.top_p=1.5"], "model.model_config.top_p"),
    }[case]
    assert_one_line_error(*run(args + needle[0], capsys)[::2], needle[1])


def _yaml(folder, text, name="bad.yaml"):
    path = folder / name
    path.write_text(text)
    return path


def test_internal_error_is_one_line_with_traceback_in_error_log(tiny_args, capsys, tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text(
        "from mindkit.registry import register\n"
        "from mindkit.tokenizers import LlamaTokenizer\n"
        "@register('tokenizer')\n"
        "class BrokenTokenizer(LlamaTokenizer):\n"
        "    def decode(self, ids, skip_special_tokens=True):\n"
        "        raise RuntimeError('boom in decode')\n")
    code, out, err = run(tiny_args + ["--predict_data", "the cat", "--register_path", str(plugin),
                                      "--processor.tokenizer.type=BrokenTokenizer"], capsys)
    assert_one_line_error(code, err, "internal error RuntimeError: boom in decode", "error.log")
    log = (tmp_path / "output" / "log" / "rank_0" / "error.log").read_text()
    assert "Traceback" in log and "boom in decode" in log


def test_use_past_false_recomputes_and_agrees(tiny_args, capsys):
    prompts = ["the cat sat on the mat", "a dog"]
    assert run(tiny_args + ["--predict_data", *prompts], capsys)[0] == 0
    with_cache = read_results()
    assert run(tiny_args + ["--predict_data", *prompts, "--model.model_config.use_past=False"], capsys)[0] == 0
    assert read_results() == with_cache


@pytest.mark.parametrize("fmt", ["ckpt", "json"])
def test_only_save_strategy_needs_no_weights_and_mindspore_reads_it(fmt, tiny_args, capsys, tmp_path):
    import mindspore as ms
    args = tiny_args + ["--only_save_strategy", "True", "--load_checkpoint", "",
                        "--options", f"parallel.strategy_ckpt_save_file=./x.{fmt}"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    path = tmp_path / "output" / "strategy" / f"ckpt_strategy_rank_0.{fmt}"
    strategy = ms.build_searched_strategy(str(path))
    assert "model.layers.1.attention.wq.weight" in strategy and "lm_head.weight" in strategy
    assert not (tmp_path / "text_generation_result.txt").exists()
