"""Eval and finetune end to end: ADGEN metrics against an independent computation, datasets, the finetune and eval
runners on a tiny random Llama with a tokenizer trained on the shipped ADGEN sample, LoRA, resume after a kill, and
data-parallel finetune under msrun."""
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, TINY_CONFIG
from mindkit.errors import ConfigError, InputError

SAMPLE = os.path.join(REPO, "data", "adgen_sample")
RUN = os.path.join(REPO, "run_mindformer.py")


# ---- metrics --------------------------------------------------------------------------------------------------------

def test_adgen_metric_equals_rouge_chinese_and_nltk_directly():
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge
    from mindkit.metrics import ADGENMetric
    labels = [json.loads(line)["summary"] for line in open(os.path.join(SAMPLE, "dev.json"), encoding="utf-8")][:4]
    preds = [labels[0], labels[1][:10] + "，很好看。", "完全不同的一句话abc123", ""]
    metric = ADGENMetric()
    metric.update(preds, labels)
    got = metric.eval()
    expected = {"rouge-1": [], "rouge-2": [], "rouge-l": [], "bleu-4": []}
    for p, l in zip(preds, labels):
        hyp, ref = " ".join(jieba.cut(p)), " ".join(jieba.cut(l))
        scores = Rouge().get_scores(hyp, ref)[0] if hyp.strip() else {k: {"f": 0.0} for k in expected}
        for k in ("rouge-1", "rouge-2", "rouge-l"):
            expected[k].append(scores[k]["f"] * 100)
        expected["bleu-4"].append(sentence_bleu([list(l)], list(p), smoothing_function=SmoothingFunction().method3)
                                  * 100 if p else 0.0)
    for k, values in expected.items():
        assert got[k] == pytest.approx(np.mean(values), abs=1e-9), k
    assert got["rouge-1"] > 30 and got["bleu-4"] > 20  # two of four predictions match well


def test_perplexity_and_emf1():
    from mindkit.metrics import EmF1Metric, PerplexityMetric
    ppl = PerplexityMetric()
    ppl.update(6.0, 4)
    ppl.update(2.0, 4)
    assert ppl.eval() == {"loss": 1.0, "PPL": pytest.approx(np.e)}
    em = EmF1Metric()
    em.update(["北京", "the cat sat", "狗"], ["北京。", "the cat", "猫"])
    result = em.eval()
    assert result["Em"] == pytest.approx(100 / 3) and result["F1"] == pytest.approx(100 * (1 + 0.8 + 0) / 3)
    with pytest.raises(InputError, match="2 predictions and 1 references"):
        em.update(["a", "b"], ["a"])


# ---- datasets -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zh_sp_model(tmp_path_factory):
    """A sentencepiece model trained on the shipped ADGEN sample (Chinese; unk 0, bos 1, eos 2, pad 3)."""
    import sentencepiece as spm
    texts = [v for name in ("train.json", "dev.json") for line in open(os.path.join(SAMPLE, name), encoding="utf-8")
             for v in json.loads(line).values()]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buf, vocab_size=160,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2,
                                   character_coverage=1.0)
    path = tmp_path_factory.mktemp("zh") / "zh.model"
    path.write_bytes(buf.getvalue())
    return str(path)


def tiny_config(zh_sp_model, **sections):
    from mindkit.config import load_yaml
    from mindkit.config.sections import MindkitConfig
    tree = load_yaml(TINY_CONFIG)
    tree["processor"]["tokenizer"]["vocab_file"] = zh_sp_model
    tree["model"]["model_config"]["pad_token_id"] = 3
    tree.update(sections)
    return MindkitConfig.from_dict(tree)


def adgen_section(path, **extra):
    return {"data_loader": {"type": "ADGenDataLoader", "dataset_dir": path, "shuffle": True},
            "max_source_length": 24, "max_target_length": 40, "batch_size": 4, **extra}


def test_keyword_gen_masks_the_prompt_and_padding(zh_sp_model):
    from mindkit.data import build_dataset
    from mindkit.runners.build import build_processor
    cfg = tiny_config(zh_sp_model, train_dataset=adgen_section(os.path.join(SAMPLE, "train.json")))
    processor = build_processor(cfg)
    data = build_dataset(cfg, "train_dataset", processor, 128)
    batch = next(data.batches(0))
    assert batch["input_ids"].shape == (4, 24 + 40 + 1)
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        n = int(mask.sum())
        answer = labels[labels != -100]
        assert list(ids[n - len(answer):n]) == list(answer) and answer[-1] == 2   # the answer, then EOS
        assert np.all(labels[n:] == -100) and np.all(ids[n:] == processor.tokenizer.pad_token_id)  # no loss
        assert processor.tokenizer.decode(list(ids[:n - len(answer)])).startswith("类型#")


def test_shuffle_resume_and_data_parallel_shards(zh_sp_model):
    from mindkit.data import build_dataset
    from mindkit.runners.build import build_processor
    cfg = tiny_config(zh_sp_model, train_dataset=adgen_section(os.path.join(SAMPLE, "train.json"), batch_size=2))
    processor = build_processor(cfg)
    one = build_dataset(cfg, "train_dataset", processor, 128)
    epoch0 = [b["input_ids"] for b in one.batches(0)]
    assert [b["input_ids"] for b in one.batches(1)][0].tolist() != epoch0[0].tolist()   # reshuffled per epoch
    assert [b["input_ids"].tolist() for b in one.batches(0, start=5)] == [b.tolist() for b in epoch0[5:]]
    cfg1 = tiny_config(zh_sp_model, train_dataset=adgen_section(os.path.join(SAMPLE, "train.json"), batch_size=1))
    ranks = [list(build_dataset(cfg1, "train_dataset", processor, 128, data_parallel=2, rank=r).batches(0))
             for r in (0, 1)]
    assert [np.concatenate([a["input_ids"], b["input_ids"]]).tolist() for a, b in zip(*ranks)] == \
        [b.tolist() for b in epoch0]


def test_dataset_bad_inputs_name_the_key(zh_sp_model, tmp_path, caplog):
    from mindkit.data import build_dataset
    from mindkit.runners.build import build_processor
    bad = tmp_path / "bad.json"
    bad.write_text('{"content": "类型#裙", "summary": "好看"}\nnot json\n{"content": "类型#裤"}\n', encoding="utf-8")
    cases = [(str(tmp_path / "missing.json"), {}, InputError, "train_dataset.data_loader.dataset_dir"),
             (str(bad), {"max_source_length": 100}, ConfigError, "seq_length \\(128\\)")]
    for path, extra, error, needle in cases:
        cfg = tiny_config(zh_sp_model, train_dataset=adgen_section(path, **extra))
        with pytest.raises(error, match=needle):
            build_dataset(cfg, "train_dataset", build_processor(cfg), 128)
    cfg = tiny_config(zh_sp_model, train_dataset=adgen_section(str(bad), batch_size=1))
    import logging
    logger = logging.getLogger("mindkit")  # it does not propagate once the CLI has set up its console
    logger.addHandler(caplog.handler)
    try:
        assert build_dataset(cfg, "train_dataset", build_processor(cfg), 128).num_batches == 1
    finally:
        logger.removeHandler(caplog.handler)
    assert "skipped 2 bad line(s) (first: line 2" in caplog.text and "summary x2" in caplog.text
    no_summary = tmp_path / "no_summary.json"
    no_summary.write_text('{"content": "类型#裙"}\n', encoding="utf-8")
    cfg = tiny_config(zh_sp_model, train_dataset=adgen_section(str(no_summary)))
    with pytest.raises(InputError, match="'summary' missing"):
        build_dataset(cfg, "train_dataset", build_processor(cfg), 128)


# ---- runners --------------------------------------------------------------------------------------------------------

def tiny_yaml(tmp_path, zh_sp_model, extra="", base=TINY_CONFIG):
    """A finetune+eval YAML over the tiny model of ``base`` (Llama by default), the Chinese tokenizer and the
    shipped sample."""
    text = open(base).read().replace("vocab_file: ''", f"vocab_file: '{zh_sp_model}'")
    text = text.replace("pad_token_id: 0", "pad_token_id: 3").replace("max_new_tokens: 8", "max_new_tokens: 40")
    text += f"""
runner_config:
  epochs: 6
  batch_size: 8
runner_wrapper:
  use_clip_grad: True
  max_grad_norm: 1.0
optimizer:
  type: AdamW
  weight_decay: 0.0
lr_schedule:
  type: CosineWithWarmUpLR
  learning_rate: 5.e-3
  warmup_ratio: 0.05
train_dataset:
  data_loader: {{type: ADGenDataLoader, dataset_dir: '{SAMPLE}/train.json', shuffle: True}}
  max_source_length: 24
  max_target_length: 40
  batch_size: 8
eval_dataset:
  data_loader: {{type: ADGenDataLoader, dataset_dir: '{SAMPLE}/dev.json', shuffle: False}}
  max_source_length: 24
  max_target_length: 40
  batch_size: 8
metric:
  - type: ADGENMetric
  - type: PerplexityMetric
callbacks:
  - type: MFLossMonitor
  - type: CheckpointMonitor
    prefix: tiny
    save_checkpoint_steps: 8
    keep_checkpoint_max: 10
{extra}"""
    path = tmp_path / "tiny_adgen.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def edit(path, *replacements):
    text = open(path, encoding="utf-8").read()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    open(path, "w", encoding="utf-8").write(text)
    return path


@pytest.fixture(scope="module")
def tiny_start(tmp_path_factory, zh_sp_model):
    """A random tiny Llama whose vocabulary covers the Chinese tokenizer (vocab 256 > 160)."""
    import mindspore as ms
    from mindkit.checkpoint import save_state
    from mindkit.config import load_yaml
    from mindkit.models import LlamaConfig, LlamaForCausalLM
    ms.set_seed(3)
    model = LlamaForCausalLM(LlamaConfig.from_dict(load_yaml(TINY_CONFIG)["model"]["model_config"]))
    path = tmp_path_factory.mktemp("start") / "tiny_start.ckpt"
    save_state({p.name: p.asnumpy() for p in model.get_parameters()}, str(path))
    return str(path)


def cli(args, cwd):
    proc = subprocess.run([sys.executable, RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def losses(stderr):
    return [float(line.split("loss: ")[1].split(",")[0]) for line in stderr.splitlines() if "loss: " in line]


def evaluate(yaml, checkpoint, cwd, out, extra=()):
    cli(["--config", yaml, "--run_mode", "eval", "--load_checkpoint", checkpoint, "--output_dir", out, *extra], cwd)
    return json.load(open(os.path.join(out, "eval_results.json")))


@pytest.fixture(scope="module")
def tiny_unit_start(tiny_start, tmp_path_factory):
    """The random tiny Llama with its matrices drawn at std 1/sqrt(hidden) instead of 0.02 (norms stay 1). At 0.02 a
    width-64 model's activations and logits are tiny (a frozen head can move a logit by ~1 at most), so adapters on
    frozen layers stall at the unigram loss; real bases have O(1) activations, which this scale gives."""
    from mindkit.checkpoint import read_state, save_state
    state = read_state(tiny_start)
    rng = np.random.default_rng(5)
    std = 1.0 / np.sqrt(state["model.norm_out.weight"].shape[0])
    state = {k: (rng.normal(0.0, std, v.shape).astype(v.dtype) if v.ndim == 2 else v) for k, v in state.items()}
    path = tmp_path_factory.mktemp("unit_start") / "tiny_unit_start.ckpt"
    save_state(state, str(path))
    return str(path)


def test_full_finetune_halves_the_loss_and_raises_rouge(tiny_start, zh_sp_model, tmp_path):
    yaml = tiny_yaml(tmp_path, zh_sp_model)
    before = evaluate(yaml, tiny_start, tmp_path, str(tmp_path / "eval_before"))
    proc = cli(["--config", yaml, "--run_mode", "finetune", "--load_checkpoint", tiny_start, "--output_dir",
                str(tmp_path / "out")], tmp_path)
    curve = losses(proc.stderr)
    assert len(curve) == 6 * 8 and curve[-1] < curve[0] / 2, curve
    final = tmp_path / "out" / "checkpoint" / "rank_0" / "tiny_rank_0-6_8.ckpt"
    after = evaluate(yaml, str(final), tmp_path, str(tmp_path / "eval_after"))
    assert after["ADGENMetric"]["rouge-l"] > before["ADGENMetric"]["rouge-l"] + 10
    assert after["PerplexityMetric"]["PPL"] < before["PerplexityMetric"]["PPL"] / 2


def test_lora_finetune_halves_the_loss_and_raises_rouge_with_a_frozen_base(tiny_unit_start, zh_sp_model, tmp_path):
    """LoRA on every projection of a random tiny Llama: only adapters (and their AdamW state) are saved, the base file
    is untouched, and base + adapter halves the loss and raises ROUGE-L as a full finetune does."""
    from mindkit.checkpoint import read_state
    yaml = edit(tiny_yaml(tmp_path, zh_sp_model, "pet_config: {pet_type: lora, lora_rank: 16, lora_alpha: 32, "
                          "target_modules: '.*w[qkvo]|.*w[123]'}\n"), ("learning_rate: 5.e-3", "learning_rate: 2.e-3"))
    base_before = read_state(tiny_unit_start)
    before = evaluate(yaml, tiny_unit_start, tmp_path, str(tmp_path / "eval_before"))  # fresh adapters: the base
    proc = cli(["--config", yaml, "--run_mode", "finetune", "--load_checkpoint", tiny_unit_start,
                "--output_dir", str(tmp_path / "out")], tmp_path)
    curve = losses(proc.stderr)
    assert len(curve) == 6 * 8 and curve[-1] < curve[0] / 2, curve
    final = tmp_path / "out" / "checkpoint" / "rank_0" / "tiny_rank_0-6_8.ckpt"
    saved = read_state(str(final))
    assert all("mindpet_delta_lora" in k or k.startswith(("adam_", "global_step", "epoch_num", "step_num",
                                                          "loss_scale")) for k in saved)
    assert os.path.getsize(final) < 10 * 2**20
    base_after = read_state(tiny_unit_start)
    assert all(np.array_equal(base_before[k], base_after[k]) for k in base_before)
    after = evaluate(yaml, str(final), tmp_path, str(tmp_path / "eval_after"),
                     ["--model.model_config.checkpoint_name_or_path", tiny_unit_start])
    assert after["ADGENMetric"]["rouge-l"] > before["ADGENMetric"]["rouge-l"] + 10
    assert after["PerplexityMetric"]["PPL"] < before["PerplexityMetric"]["PPL"] / 2


def test_killed_finetune_resumes_to_the_same_weights(tiny_start, zh_sp_model, tmp_path):
    from mindkit.checkpoint import read_state
    yaml = edit(tiny_yaml(tmp_path, zh_sp_model), ("epochs: 6", "epochs: 3"),
                ("save_checkpoint_steps: 8", "save_checkpoint_steps: 4"))
    base = ["--config", yaml, "--run_mode", "finetune", "--load_checkpoint", tiny_start]
    cli(base + ["--output_dir", str(tmp_path / "straight")], tmp_path)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, RUN, *base, "--output_dir", str(killed)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed / "checkpoint" / "rank_0" / "tiny_rank_0-1_4.ckpt"
    while not first.exists() and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoint" / "rank_0" / "tiny_rank_0-3_8.ckpt").exists()  # it really stopped early
    proc = cli(base + ["--output_dir", str(killed), "--resume_training", "True"], tmp_path)
    assert "resuming from" in proc.stderr
    a = read_state(str(tmp_path / "straight" / "checkpoint" / "rank_0" / "tiny_rank_0-3_8.ckpt"))
    b = read_state(str(killed / "checkpoint" / "rank_0" / "tiny_rank_0-3_8.ckpt"))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_data_parallel_finetune_under_msrun_matches_one_process(tiny_start, zh_sp_model, tmp_path):
    from test_launcher import free_port, launch
    yaml = edit(tiny_yaml(tmp_path, zh_sp_model), ("epochs: 6", "epochs: 1"))
    common = f"{RUN} --config {yaml} --run_mode finetune --load_checkpoint {tiny_start}"
    one = cli(common.split()[1:] + ["--output_dir", str(tmp_path / "one")], tmp_path)
    proc = launch([f"{common} --output_dir {tmp_path / 'two'} --use_parallel True --parallel_config.data_parallel 2 "
                   "--train_dataset.batch_size 4", "2", str(free_port()), str(tmp_path / "msrun_log"), "True", "300"],
                  tmp_path)
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "msrun_log").iterdir())
    assert proc.returncode == 0, logs[-3000:]
    two = (tmp_path / "two" / "log" / "rank_0" / "info.log").read_text()
    assert np.allclose(losses(one.stderr), losses(two), atol=1e-4)
    assert len(losses(two)) == 8


def test_finetune_bad_inputs_are_one_line(tiny_start, zh_sp_model, tmp_path):
    yaml = tiny_yaml(tmp_path, zh_sp_model)
    cases = [(["--train_dataset_dir", str(tmp_path / "none.json")], "train_dataset.data_loader.dataset_dir"),
             (["--options", "pet_config.pet_type=lora", "pet_config.target_modules=.*nothing"],
              "pet_config.target_modules"),
             (["--load_checkpoint", ""], "load_checkpoint")]
    for args, needle in cases:
        proc = subprocess.run([sys.executable, RUN, "--config", yaml, "--run_mode", "finetune", "--load_checkpoint",
                               tiny_start, "--output_dir", str(tmp_path / "o"), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(f"error: {needle}"), \
            proc.stderr[-1500:]


@pytest.mark.slow
def test_real_smollm2_lora_runs_and_saves_a_small_adapter(tmp_path):
    proc = cli(["--config", os.path.join(REPO, "configs/smollm2/finetune_smollm2_lora.yaml"), "--output_dir",
                str(tmp_path / "out"), "--options", "train_dataset.num_samples=4"], tmp_path)
    curve = losses(proc.stderr)
    assert len(curve) == 2 and all(np.isfinite(curve))
    saved = list((tmp_path / "out" / "checkpoint" / "rank_0").iterdir())
    assert len(saved) == 1 and os.path.getsize(saved[0]) < 10 * 2**20


def test_trainer_api_finetunes_evaluates_and_predicts(tiny_start, zh_sp_model, tmp_path, monkeypatch):
    from mindkit.api import Trainer
    from mindkit.data import build_dataset
    from mindkit.runners.build import build_model, build_processor
    monkeypatch.chdir(tmp_path)
    yaml = edit(tiny_yaml(tmp_path, zh_sp_model), ("epochs: 6", "epochs: 2"))
    settings = {"load_checkpoint": tiny_start, "output_dir": str(tmp_path / "out")}
    base = Trainer(yaml, **settings).evaluate()
    trainer = Trainer(yaml, **settings)
    curve = trainer.finetune()
    assert len(curve) == 16 and curve[-1] < curve[0]
    results = trainer.evaluate()  # the trained model, not the checkpoint it started from
    assert set(results) == {"ADGENMetric", "PerplexityMetric"}
    assert results["PerplexityMetric"]["PPL"] < base["PerplexityMetric"]["PPL"]
    assert json.load(open(tmp_path / "out" / "eval_results.json")) == results
    (answer,) = trainer.predict(["类型#裙*颜色#白色"])[0]["text_generation_text"]
    assert answer.startswith("类型#裙")
    # objects built by the caller are used as they are
    config = Trainer(yaml, **settings).config
    data = build_dataset(config, "eval_dataset", build_processor(config), 128)
    data.samples = data.samples[:3]
    few = Trainer(config, model=build_model(config), eval_dataset=data).evaluate()
    assert few["PerplexityMetric"] == base["PerplexityMetric"]  # same weights and batches; 3 generations only
