"""``ADGENMetric`` as MindFormers and ChatGLM's ADGEN evaluation compute it: per pair, ROUGE-1/2/L F-scores of the
jieba-segmented texts (``rouge_chinese``) and character-level BLEU-4 (``nltk``, smoothing method3), x100, then the
mean of each over all pairs.

Empty text: ``rouge_chinese`` raises "Hypothesis is empty." ("Reference is empty.") when a text segments to nothing
(empty or whitespace only). Such a pair scores 0 for ROUGE-1/2/L and still gets its BLEU (nltk gives 0 for an empty
prediction) and still counts in the means -- what ChatGLM2's ptuning script and LLaMA-Factory do, so a model that
answers nothing is penalised. MindFormers' own ``ADGENMetric`` instead skips the pair entirely (its BLEU too), so
empty answers drop out of its means; we do not follow it there. Scores are not rounded per pair (MindFormers and ChatGLM round
each to 4 decimals first, a difference below 1e-4).
"""
import functools
import logging

from mindkit.errors import InputError
from mindkit.metrics.text_pairs import check_pairs
from mindkit.registry import register

KEYS = ("rouge-1", "rouge-2", "rouge-l", "bleu-4")


@functools.lru_cache(maxsize=None)
def jieba_ready():
    """jieba with its dictionary loaded: once per process, and only when text is first scored (~1 s). jieba logs
    "Building prefix dict ..." through its own stderr handler at DEBUG; raise its level first so nothing shows."""
    import jieba
    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def segmented(jieba, text):
    """Words joined by spaces; '' when there are none (rouge_chinese's "empty" condition)."""
    joined = " ".join(jieba.cut(text))
    return joined if joined.strip() else ""


@register("metric")
class ADGENMetric:
    """``update(preds: list[str], labels: list[str])`` per batch, ``eval() -> {"rouge-1", "rouge-2", "rouge-l",
    "bleu-4"}`` (means, x100), ``clear()`` to start over. ``tokenizer_type`` and ``ignore_pad_token_for_loss`` are
    accepted so older MindFormers configs load; they are unused, since mindkit decodes answers before scoring."""
    input_kind = "text"

    def __init__(self, tokenizer_type=None, ignore_pad_token_for_loss=True):
        self.clear()

    def clear(self):
        self.scores = []  # one (rouge-1, rouge-2, rouge-l, bleu-4) tuple per pair

    def update(self, preds, labels):
        check_pairs(preds, labels, "ADGENMetric")
        if not preds:
            return
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
        from rouge_chinese import Rouge
        jieba, rouge, smooth = jieba_ready(), Rouge(), SmoothingFunction().method3
        for pred, label in zip(preds, labels):
            hyp, ref = segmented(jieba, pred), segmented(jieba, label)
            if hyp and ref:
                r = rouge.get_scores(hyp, ref)[0]
                rouge_f = [r[k]["f"] * 100 for k in KEYS[:3]]
            else:
                rouge_f = [0.0, 0.0, 0.0]
            bleu = sentence_bleu([list(label)], list(pred), smoothing_function=smooth) * 100
            self.scores.append((*rouge_f, float(bleu)))

    def eval(self):
        if not self.scores:
            raise InputError("ADGENMetric.eval", "0 scored pairs", "update() with at least one prediction first")
        n = len(self.scores)
        return {k: sum(s[i] for s in self.scores) / n for i, k in enumerate(KEYS)}
