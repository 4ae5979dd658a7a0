"""``EmF1Metric``: exact match and token-overlap F1, SQuAD style, x100, with tokens that suit Chinese: each CJK
character (and kana) is a token, other text splits on whitespace. So "北京市" vs "北京" gets partial credit the way
"new york city" vs "new york" does.

Normalisation before comparing (both for EM and F1): NFKC (full-width ＡＢＣ１２３ become ABC123), lower case,
ASCII punctuation dropped as SQuAD does, other punctuation (，。！“”《》 ...) read as a space. Unlike SQuAD, English
articles (a/an/the) are kept: dropping them is an English-only rule.

MindFormers' ``EmF1Metric`` differs in its F1: it uses the longest common substring of jieba/CJK segments rather than
the bag-of-tokens overlap used here.
"""
import collections
import re
import string
import unicodedata

from mindkit.errors import InputError
from mindkit.metrics.text_pairs import check_pairs
from mindkit.registry import register

# CJK unified ideographs (+ extension A, compatibility, extensions B..), hiragana and katakana
_CJK = re.compile("([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f])")


def tokens(text):
    """Other punctuation than ASCII (，。！ ...) separates clauses in text written without spaces, so it becomes a
    space; then NFKC and lower case; then ASCII punctuation is dropped as SQuAD does ("3.5" -> "35")."""
    text = "".join(" " if c not in string.punctuation and unicodedata.category(c).startswith("P") else c for c in text)
    text = "".join(c for c in unicodedata.normalize("NFKC", text).lower() if c not in string.punctuation)
    return _CJK.sub(r" \1 ", text).split()


def f1(pred_tokens, label_tokens):
    if not pred_tokens or not label_tokens:
        return float(pred_tokens == label_tokens)
    common = sum((collections.Counter(pred_tokens) & collections.Counter(label_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(label_tokens)
    return 2 * precision * recall / (precision + recall)


@register("metric")
class EmF1Metric:
    """``update(preds: list[str], labels: list[str])`` per batch; ``eval() -> {"Em", "F1"}``, means x100."""
    input_kind = "text"

    def __init__(self):
        self.clear()

    def clear(self):
        self.em, self.f1, self.count = 0.0, 0.0, 0

    def update(self, preds, labels):
        check_pairs(preds, labels, "EmF1Metric")
        for pred, label in zip(preds, labels):
            p, g = tokens(pred), tokens(label)
            self.em += float(p == g)
            self.f1 += f1(p, g)
            self.count += 1

    def eval(self):
        if not self.count:
            raise InputError("EmF1Metric.eval", "0 scored pairs", "update() with at least one prediction first")
        return {"Em": 100 * self.em / self.count, "F1": 100 * self.f1 / self.count}
