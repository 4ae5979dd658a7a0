"""The README's main command on the real SmolLM2-135M-Instruct, as a new user runs it (slow)."""
import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def run_cli(args, cwd):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "run_mindformer.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_readme_predict_command_answers_paris(tmp_path):
    # run from another folder: the relative config path is found beside run_mindformer.py
    proc = run_cli(["--config", "configs/smollm2/predict_smollm2_135m.yaml", "--run_mode", "predict",
                    "--predict_data", "What is the capital of France?"], tmp_path)
    assert "The capital of France is Paris." in proc.stdout
    assert "generate speed" in proc.stderr and "time to first token" in proc.stderr
    results = ast.literal_eval((tmp_path / "text_generation_result.txt").read_text(encoding="utf-8"))
    (text,) = results[0]["text_generation_text"]
    assert text.endswith("What is the capital of France?\nassistant\nThe capital of France is Paris.")
    assert (tmp_path / "output" / "log" / "rank_0" / "info.log").exists()


def test_prompt_file_in_batches_with_progress(tmp_path):
    prompts = ["Name a color.", "What is 2 + 3?", "Say hello in French.", "Name a fruit.", "What is the sun?"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    proc = run_cli(["--config", os.path.join(REPO, "configs/smollm2/predict_smollm2_135m.yaml"),
                    "--predict_data", "prompts.txt", "--predict_batch_size", "2", "--max_new_tokens", "12"], tmp_path)
    results = ast.literal_eval((tmp_path / "text_generation_result.txt").read_text(encoding="utf-8"))
    assert [len(r["text_generation_text"]) for r in results] == [2, 2, 1]
    assert "5/5 prompts" in proc.stderr
    assert "Bonjour" in proc.stdout


def test_config_disagreeing_with_the_gguf_is_named(tmp_path):
    """theta and head counts leave no trace in weight shapes: they are checked against the GGUF metadata."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "run_mindformer.py"), "--config",
                           os.path.join(REPO, "configs/smollm2/predict_smollm2_135m.yaml"), "--predict_data", "hi",
                           "--model.model_config.theta=10000.0"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: model.model_config.theta: got 10000.0; expected 100000.0 as recorded in" in proc.stderr
