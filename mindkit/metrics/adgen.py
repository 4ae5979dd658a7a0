"""``ADGENMetric`` as MindFormers (and ChatGLM's ADGEN evaluation) computes it: per pair, ROUGE-1/2/L F-scores of the
jieba-segmented texts (``rouge_chinese``) and character-level BLEU-4 (``nltk``, smoothing method3), x100, averaged.

A prediction or reference that segments to nothing scores 0 for ROUGE (``rouge_chinese`` raises on empty input; the
reference scripts catch it the same way); BLEU of an empty prediction is 0 too.
"""
import logging

import numpy as np

from mindkit.metrics.text_pairs import check_pairs
from mindkit.registry import register

KEYS = ("rouge-1", "rouge-2", "rouge-l", "bleu-4")


def _jieba():
    import jieba
    jieba.setLogLevel(logging.WARNING)  # no dictionary-loading chatter on the console
    return jieba


def pair_scores(pred, label):
    """(rouge-1, rouge-2, rouge-l, bleu-4) of one pair, x100."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge
    jieba = _jieba()
    hyp, ref = " ".join(jieba.cut(pred)).strip(), " ".join(jieba.cut(label)).strip()
    if hyp and ref:
        r = Rouge().get_scores(hyp, ref)[0]
        rouge = [r[k]["f"] * 100 for k in ("rouge-1", "rouge-2", "rouge-l")]
    else:
        rouge = [0.0, 0.0, 0.0]
    bleu = sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3) * 100 \
        if pred else 0.0
    return (*rouge, bleu)


@register("metric")
class ADGENMetric:
    input_kind = "text"

    def __init__(self, **ignored):
        self.clear()

    def clear(self):
        self.scores = []

    def update(self, preds, labels):
        check_pairs(preds, labels, "ADGENMetric")
        self.scores.extend(pair_scores(p, l) for p, l in zip(preds, labels))

    def eval(self):
        means = np.mean(self.scores, axis=0) if self.scores else np.zeros(len(KEYS))
        return {k: float(v) for k, v in zip(KEYS, means)}
