"""The eval metrics on their own: ADGENMetric against rouge_chinese and nltk called directly, perplexity and EM/F1 on
hand-checked numbers, registry names, bad input, and that scoring needs no network and prints nothing."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from mindkit import registry
from mindkit.errors import ConfigError, InputError
from mindkit.metrics import ADGENMetric, EmF1Metric, PerplexityMetric

FIXTURE = os.path.join(REPO, "tests", "fixtures", "adgen_small.json")


def adgen_rows():
    with open(FIXTURE, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def varied_predictions(labels):
    """Predictions that differ from the references in the ways generated answers do."""
    return [
        labels[0],                                              # identical
        labels[1][:20] + "这件衬衫的价格也很实惠。",              # right start, wrong ending
        "",                                                     # nothing generated
        "简约白色T恤 100% cotton, size M/L, 2024新款只要99元",   # English and digits mixed in
        " \n ",                                                 # whitespace only
        "。。。",                                               # punctuation only
        "。".join(reversed(labels[6].rstrip("。").split("。"))) + "。",  # clauses swapped
        labels[8],                                              # another item's text
        "A pink chiffon pleated skirt, light and sweet.",       # English only
        labels[9][:6],                                          # truncated
        "好看好看好看好看好看",                                  # degenerate repetition
        labels[11].replace("灰色", "黑色").replace("冬季", "秋季"),  # a few words changed
    ]


def reference_scores(preds, labels):
    """ADGEN's recipe written out with the libraries themselves, independently of mindkit's code."""
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge
    out = {"rouge-1": [], "rouge-2": [], "rouge-l": [], "bleu-4": []}
    for pred, label in zip(preds, labels):
        try:
            result = Rouge().get_scores(" ".join(jieba.cut(pred)), " ".join(jieba.cut(label)))[0]
        except ValueError as e:  # "Hypothesis is empty." / "Reference is empty.": the pair scores 0
            assert "is empty" in str(e)
            result = {k: {"f": 0.0} for k in ("rouge-1", "rouge-2", "rouge-l")}
        for k in ("rouge-1", "rouge-2", "rouge-l"):
            out[k].append(result[k]["f"] * 100)
        out["bleu-4"].append(sentence_bleu([list(label)], list(pred),
                                           smoothing_function=SmoothingFunction().method3) * 100)
    return out


# ---- ADGENMetric ----------------------------------------------------------------------------------------------------

def test_adgen_metric_equals_an_independent_computation():
    labels = [r["summary"] for r in adgen_rows()]
    preds = varied_predictions(labels)
    assert len(preds) == len(labels) == 12
    metric = ADGENMetric()
    metric.update(preds[:5], labels[:5])  # two batches accumulate
    metric.update(preds[5:], labels[5:])
    got = metric.eval()
    expected = reference_scores(preds, labels)
    assert set(got) == {"rouge-1", "rouge-2", "rouge-l", "bleu-4"}
    for k, values in expected.items():
        assert got[k] == pytest.approx(np.mean(values), abs=1e-9), k
    # the cases really differ: some pairs score 0, some 100, some in between
    per_pair = np.array(expected["rouge-l"])
    assert (per_pair == 0).sum() >= 3 and per_pair.max() == pytest.approx(100) and ((per_pair > 0) & (per_pair < 99)).any()


def test_adgen_identical_scores_100_and_empty_scores_0_and_counts():
    label = adgen_rows()[0]["summary"]
    metric = ADGENMetric()
    metric.update([label], [label])
    assert metric.eval() == pytest.approx({"rouge-1": 100, "rouge-2": 100, "rouge-l": 100, "bleu-4": 100})
    metric.update([""], [label])  # an empty answer is a 0 in every mean, not skipped
    assert metric.eval() == pytest.approx({"rouge-1": 50, "rouge-2": 50, "rouge-l": 50, "bleu-4": 50})
    metric.update([label], [""])  # an empty reference too
    assert metric.eval()["rouge-1"] == pytest.approx(100 / 3)


def test_adgen_clear_starts_over_and_eval_of_nothing_is_an_error():
    label = adgen_rows()[2]["summary"]
    metric = ADGENMetric()
    metric.update([""], [label])
    metric.clear()
    metric.update([label], [label])
    assert metric.eval()["rouge-l"] == pytest.approx(100)
    metric.clear()
    metric.update([], [])
    with pytest.raises(InputError, match="ADGENMetric.eval: got '0 scored pairs'"):
        metric.eval()


def test_jieba_dictionary_loads_once():
    import jieba
    from mindkit.metrics.adgen import jieba_ready
    first = jieba_ready()
    assert first is jieba_ready() is jieba and jieba.dt.initialized


def test_scoring_needs_no_network_and_keeps_the_console_quiet(tmp_path):
    """In a fresh process with sockets disabled and an empty NLTK_DATA: jieba is not loaded by importing the
    metrics, the scores come out, and nothing (jieba's "Building prefix dict ...") reaches stdout or stderr."""
    code = r"""
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from mindkit.metrics import ADGENMetric
assert "jieba" not in sys.modules, "jieba loaded at import"
m = ADGENMetric()
m.update(["蓝色碎花连衣裙，清新又温柔。", ""], ["这款蓝色碎花连衣裙，清新的配色很温柔。", "白色衬衫"])
r = m.eval()
assert 0 < r["rouge-1"] < 100 and 0 < r["bleu-4"] < 100, r
sys.stdout.write("ok")
"""
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok" and proc.stderr == ""


# ---- PerplexityMetric -----------------------------------------------------------------------------------------------

def test_perplexity_is_exp_of_the_mean_token_loss():
    batches = [[2.0, 1.5, 0.5], [3.0], [0.25, 0.75, 1.0, 2.5, 1.5]]  # per-token losses, uneven batches
    all_tokens = [x for b in batches for x in b]
    mean = sum(all_tokens) / len(all_tokens)  # 13.0 / 9
    metric = PerplexityMetric()
    for b in batches:
        metric.update(sum(b), len(b))  # what the eval runner calls
    assert metric.eval() == pytest.approx({"loss": 13.0 / 9, "PPL": math.exp(13.0 / 9)})
    assert mean == pytest.approx(13.0 / 9)
    assert metric.eval()["loss"] != pytest.approx(np.mean([np.mean(b) for b in batches]))  # tokens, not batches
    per_token = PerplexityMetric()
    per_token.update(batches[0])
    per_token.update(np.array(batches[1], np.float32))
    per_token.update(sum(batches[2]), np.int64(len(batches[2])))  # numpy scalars from an all-reduce are fine
    assert per_token.eval() == pytest.approx(metric.eval())
    metric.clear()
    metric.update(0.0, 0)
    with pytest.raises(InputError, match="0 scored tokens"):
        metric.eval()


@pytest.mark.parametrize("args, named", [
    ((1.0, -1), "-1"), ((1.0, 2.5), "2.5"), ((1.0, True), "True"), ((float("nan"), 3), "nan"),
    (("1.0", 3), "'1.0'"), ((5.0, 0), "over 0 tokens"), ((1.5,), "1.5"), (([1.0, float("inf")],), "non-finite"),
])
def test_perplexity_bad_updates_are_named(args, named):
    with pytest.raises(InputError, match="PerplexityMetric.update") as e:
        PerplexityMetric().update(*args)
    assert named in str(e.value)


# ---- EmF1Metric -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pred, label, em, f1", [
    ("郑州市", "郑州市。", 1, 1.0),                 # punctuation ignored
    ("郑州", "郑州市", 0, 0.8),                     # P 2/2, R 2/3
    ("北京，上海", "北京上海", 1, 1.0),             # CJK: characters, so spacing and commas do not matter
    ("The Great Wall", "the great wall!", 1, 1.0),
    ("ＡＢＣ１２３", "abc123", 1, 1.0),             # full-width forms
    ("iPhone 15 Pro", "iphone 15", 0, 0.8),         # words: P 2/3, R 2/2
    ("3.5寸屏幕", "3.5 寸", 0, 2 / 3),              # ["35", 寸, 屏, 幕] vs ["35", 寸]
    ("狗", "猫", 0, 0.0),
    ("", "", 1, 1.0),
    ("", "猫", 0, 0.0),
])
def test_emf1_hand_checked(pred, label, em, f1):
    metric = EmF1Metric()
    metric.update([pred], [label])
    assert metric.eval() == pytest.approx({"Em": 100 * em, "F1": 100 * f1})


def test_emf1_averages_over_pairs():
    metric = EmF1Metric()
    metric.update(["郑州市", "郑州"], ["郑州市", "郑州市"])
    metric.update(["狗"], ["猫"])
    assert metric.eval() == pytest.approx({"Em": 100 / 3, "F1": 100 * 1.8 / 3})
    metric.clear()
    with pytest.raises(InputError, match="EmF1Metric.eval"):
        metric.eval()


# ---- registry and bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, cls", [("ADGENMetric", ADGENMetric), ("PerplexityMetric", PerplexityMetric),
                                       ("EmF1Metric", EmF1Metric)])
def test_metrics_are_registered_by_name(name, cls):
    assert registry.get("metric", name) is cls
    assert isinstance(registry.build("metric", {"type": name}), cls)


def test_registry_arguments():
    # older MindFormers configs pass tokenizer_type to ADGENMetric; it loads (and is unused)
    assert isinstance(registry.build("metric", {"type": "ADGENMetric", "tokenizer_type": "glm_6b"}), ADGENMetric)
    with pytest.raises(ConfigError, match="metric.smoothing"):
        registry.build("metric", {"type": "EmF1Metric", "smoothing": 3})


@pytest.mark.parametrize("cls", [ADGENMetric, EmF1Metric])
def test_text_metrics_refuse_bad_input_by_name(cls):
    name = cls.__name__
    with pytest.raises(InputError, match=f"{name}.update: got '2 predictions and 1 references'; "
                                         "expected one reference per prediction"):
        cls().update(["一", "二"], ["一"])
    with pytest.raises(InputError, match=f"{name}.update: got 'str'"):
        cls().update("一句话", "一句话")  # a bare string would be scored character by character
    with pytest.raises(InputError, match="reference 1 of type NoneType"):
        cls().update(["一", "二"], ["一", None])
