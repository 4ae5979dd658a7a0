"""The Python API on the tiny model: Auto classes by name, YAML and folder; missing files named before anything is
built; model.generate equal to the predict runner; pipeline in predict's format, streaming exactly the answer."""
import ast
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import mindspore as ms
import numpy as np
import pytest
import yaml

from conftest import REPO, TINY_CONFIG
from mindkit import auto
from mindkit.api import AutoConfig, AutoModel, AutoTokenizer, TextIteratorStreamer, TextStreamer, pipeline
from mindkit.checkpoint.io import read_state
from mindkit.cli import main
from mindkit.errors import ConfigError, InputError
from mindkit.models import LlamaConfig, LlamaForCausalLM
from mindkit.tokenizers import LlamaTokenizer

PROMPTS = ["the cat sat on the mat and ran far away", "a dog", "big red car on the road"]


@pytest.fixture(scope="module")
def tiny_dir(tiny_ckpt, tiny_sp_model, tmp_path_factory):
    """A folder as users keep a model: a YAML naming its weights and tokenizer relative to itself."""
    folder = tmp_path_factory.mktemp("tiny_model")
    shutil.copy(tiny_ckpt, folder / "weights.ckpt")
    shutil.copy(tiny_sp_model, folder / "tokenizer.model")
    tree = yaml.safe_load(open(TINY_CONFIG))
    tree["load_checkpoint"] = "weights.ckpt"
    tree["processor"]["tokenizer"]["vocab_file"] = "tokenizer.model"
    (folder / "predict_tiny.yaml").write_text(yaml.safe_dump(tree))
    return str(folder)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return AutoModel.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(tiny_dir)


def test_model_names_are_the_predict_configs(tmp_path, monkeypatch):
    names = auto.model_names()
    assert names["smollm2_135m"].endswith("configs/smollm2/predict_smollm2_135m.yaml")
    assert names["llama2_7b"].endswith("configs/llama2/predict_llama2_7b.yaml")
    (tmp_path / "glm2").mkdir()
    shutil.copy(TINY_CONFIG, tmp_path / "glm2" / "predict_glm2_6b.yaml")
    (tmp_path / "glm2" / "finetune_glm2_6b.yaml").write_text("seed: 0\n")
    monkeypatch.setattr(auto, "CONFIGS", str(tmp_path))
    assert auto.model_names() == {"glm2_6b": str(tmp_path / "glm2" / "predict_glm2_6b.yaml")}
    assert AutoConfig.from_pretrained("glm2_6b").hidden_size == 64


def test_auto_config_by_name_yaml_and_folder(tiny_dir, tmp_path, monkeypatch):
    smol = AutoConfig.from_pretrained("smollm2_135m")
    assert isinstance(smol, LlamaConfig) and (smol.num_layers, smol.hidden_size, smol.n_kv_heads) == (30, 576, 3)
    assert AutoConfig.from_pretrained("llama2_7b").ffn_hidden_size == 11008
    monkeypatch.chdir(tmp_path)  # relative paths: the current folder first, then the project
    by_yaml = AutoConfig.from_pretrained("configs/tiny/predict_tiny_llama.yaml", num_layers=3, max_new_tokens=5)
    assert (by_yaml.hidden_size, by_yaml.num_layers, by_yaml.max_new_tokens) == (64, 3, 5)
    assert AutoConfig.from_pretrained(tiny_dir) == AutoConfig.from_pretrained(TINY_CONFIG)
    with pytest.raises(ConfigError, match="smollm2_135m") as e:
        AutoConfig.from_pretrained("smollm2_1b")
    assert e.value.key == "yaml_name_or_path"
    (tmp_path / "a.yaml").write_text("seed: 0\n")
    (tmp_path / "b.yaml").write_text("seed: 0\n")
    with pytest.raises(ConfigError, match="a.yaml, b.yaml"):
        AutoConfig.from_pretrained(str(tmp_path))


def test_from_config_builds_random_weights_from_the_callers_seed():
    config = AutoConfig.from_pretrained(TINY_CONFIG)
    weights = []
    for seed in (3, 3, 4):
        ms.set_seed(seed)
        model = AutoModel.from_config(config)
        assert isinstance(model, LlamaForCausalLM)
        weights.append(model.model.layers[0].attention.wq.weight.asnumpy())
    assert np.array_equal(weights[0], weights[1]) and not np.array_equal(weights[0], weights[2])
    assert np.abs(weights[0]).max() > 0
    assert len(model.generate([5, 6, 7], max_new_tokens=4, eos_token_id=[])[0]) == 7


def test_missing_weights_and_tokenizer_are_named_at_once_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to open a network connection")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr("mindkit.runners.build.build_model", no_network)  # nothing may be built first
    start = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        AutoModel.from_pretrained("llama2_7b")
    assert e.value.key == "load_checkpoint" and e.value.value == ""
    assert "checkpoint file" in str(e.value) and "configs/llama2/predict_llama2_7b.yaml" in str(e.value)
    with pytest.raises(ConfigError, match="/nowhere/llama2_7b.ckpt") as e:
        AutoModel.from_pretrained("llama2_7b", load_checkpoint="/nowhere/llama2_7b.ckpt")
    assert e.value.key == "load_checkpoint"
    for call in (lambda: AutoTokenizer.from_pretrained("llama2_7b"), lambda: pipeline(model="llama2_7b")):
        with pytest.raises(ConfigError, match="LlamaTokenizer") as e:
            call()
        assert e.value.key == "processor.tokenizer.vocab_file"
    assert time.perf_counter() - start < 3


def test_folder_model_loads_its_own_files(tiny, tiny_dir, tiny_ckpt, tiny_sp_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the folder's relative file names resolve against the folder, not here
    model, tokenizer = tiny
    saved = read_state(tiny_ckpt)
    for p in model.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), saved[p.name])
    assert tokenizer.encode("the cat sat") == LlamaTokenizer(vocab_file=tiny_sp_model).encode("the cat sat")


def predict_results(tiny_ckpt, tiny_sp_model, tmp_path, monkeypatch, capsys, *args):
    monkeypatch.chdir(tmp_path)
    code = main(["--config", TINY_CONFIG, "--load_checkpoint", tiny_ckpt, "--output_dir", str(tmp_path / "out"),
                 f"--processor.tokenizer.vocab_file={tiny_sp_model}", "--predict_data", *PROMPTS, *args])
    assert code == 0, capsys.readouterr().err
    return ast.literal_eval((tmp_path / "text_generation_result.txt").read_text())


def test_generate_and_pipeline_equal_the_predict_runner(tiny, tiny_dir, tiny_ckpt, tiny_sp_model, tmp_path,
                                                        monkeypatch, capsys):
    model, tokenizer = tiny
    predicted = predict_results(tiny_ckpt, tiny_sp_model, tmp_path, monkeypatch, capsys, "--max_new_tokens", "12")
    assert [len(r["text_generation_text"]) for r in predicted] == [2, 1]  # the YAML's predict_batch_size: 2
    ids = [tokenizer.encode(p) for p in PROMPTS]
    batch = model.generate(ids, max_new_tokens=12)  # unequal lengths in one batch
    assert [seq[:len(p)] for seq, p in zip(batch, ids)] == ids
    assert tokenizer.batch_decode(batch) == [t for r in predicted for t in r["text_generation_text"]]
    assert model.generate(ids[1], max_new_tokens=12) == [batch[1]]  # the most padded row, alone
    assert pipeline(task="text_generation", model=tiny_dir)(PROMPTS, max_new_tokens=12) == predicted
    built = pipeline("text_generation", model=model, tokenizer=tokenizer, batch_size=2, max_new_tokens=12)
    assert built(PROMPTS) == predicted
    assert built(PROMPTS[0]) == [{"text_generation_text": predicted[0]["text_generation_text"][:1]}]


def test_generate_lengths_inputs_and_errors(tiny):
    model, tokenizer = tiny
    assert model.config.max_new_tokens == 8
    prompt = tokenizer.encode("the cat sat on the mat")
    n, free = len(prompt), dict(eos_token_id=[])
    assert len(model.generate(prompt, **free)[0]) == n + 8  # the config's max_new_tokens
    assert len(model.generate(prompt, max_new_tokens=5, **free)[0]) == n + 5
    assert len(model.generate(prompt, max_length=n + 3, **free)[0]) == n + 3  # wins over the config's default
    assert len(model.generate(prompt, max_length=n + 3, max_new_tokens=6, **free)[0]) == n + 6
    short = tokenizer.encode("a dog")
    padded = np.full((2, n), model.config.pad_token_id, np.int64)
    padded[0], padded[1, :len(short)] = prompt, short
    assert model.generate(padded, max_new_tokens=4, **free) == model.generate([prompt, short], max_new_tokens=4,
                                                                              **free)
    assert model.generate(np.array(short), max_new_tokens=4, **free) == model.generate(short, max_new_tokens=4, **free)
    sampled = [model.generate(prompt, do_sample=True, top_k=20, seed=s, max_new_tokens=6, **free)[0] for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]
    with pytest.raises(InputError, match="num_beams"):
        model.generate(prompt, num_beams=4)
    with pytest.raises(InputError, match="vocab_size=256"):
        model.generate([5, 300])
    with pytest.raises(InputError):
        model.generate("the cat")


def test_pipeline_streams_exactly_the_generated_text(tiny):
    model, tokenizer = tiny
    prompt = "the cat sat on the mat"
    ids = tokenizer.encode(prompt)
    new = model.generate(ids, max_new_tokens=10, eos_token_id=[])[0][len(ids):]
    assert tokenizer.decode(new).strip()
    out = io.StringIO()
    streamed = pipeline("text_generation", model=model, tokenizer=tokenizer,
                        streamer=TextStreamer(tokenizer, skip_prompt=True, file=out), eos_token_id=[])
    result = streamed(prompt, max_new_tokens=10)
    assert out.getvalue() == tokenizer.decode(new) + "\n"
    assert result == [{"text_generation_text": [tokenizer.decode(ids + new)]}]
    with_prompt = io.StringIO()
    pipeline("text_generation", model=model, tokenizer=tokenizer, streamer=TextStreamer(tokenizer, file=with_prompt),
             max_new_tokens=10, eos_token_id=[])(prompt)
    assert with_prompt.getvalue() == tokenizer.decode(ids + new) + "\n"
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=60)
    generator = pipeline("text_generation", model=model, tokenizer=tokenizer, streamer=streamer)
    thread = threading.Thread(target=generator, args=(prompt,), kwargs=dict(max_new_tokens=10, eos_token_id=[]))
    thread.start()
    pieces = list(streamer)
    thread.join()
    assert len(pieces) > 1 and "".join(pieces) == tokenizer.decode(new)
    with pytest.raises(ConfigError, match="text_generation"):
        pipeline("translation", model=model, tokenizer=tokenizer)
    with pytest.raises(InputError, match="num_beams"):
        generator(prompt, num_beams=2)


def test_import_mindkit_stays_light_and_exports_the_api():
    code = ("import sys, mindkit; assert 'mindspore' not in sys.modules; "
            "from mindkit import AutoConfig, AutoModel, AutoTokenizer, TextStreamer, TextIteratorStreamer, Trainer, "
            "pipeline; print(pipeline.__module__, TextStreamer.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": REPO}, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["mindkit.pipelines", "mindkit.generation.streamers"]
