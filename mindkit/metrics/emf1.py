"""``EmF1Metric``: exact match and token-overlap F1 (SQuAD style), x100. Tokens are single CJK characters and
whitespace-separated words otherwise, so Chinese and English answers are scored alike."""
import collections
import re
import string

from mindkit.metrics.text_pairs import check_pairs
from mindkit.registry import register

_CJK = re.compile(r"[\u4e00-\u9fff]")
_PUNCT = set(string.punctuation) | set("，。！？；：、“”‘’（）《》【】")


def tokens(text):
    text = "".join(c for c in text.lower() if c not in _PUNCT)
    return _CJK.sub(lambda m: f" {m.group(0)} ", text).split()


def f1(pred, label):
    p, g = tokens(pred), tokens(label)
    common = sum((collections.Counter(p) & collections.Counter(g)).values())
    if not p or not g:
        return float(p == g)
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


@register("metric")
class EmF1Metric:
    input_kind = "text"

    def __init__(self, **ignored):
        self.clear()

    def clear(self):
        self.em, self.f1, self.count = 0.0, 0.0, 0

    def update(self, preds, labels):
        check_pairs(preds, labels, "EmF1Metric")
        for p, l in zip(preds, labels):
            self.em += float(tokens(p) == tokens(l))
            self.f1 += f1(p, l)
            self.count += 1

    def eval(self):
        n = max(self.count, 1)
        return {"Em": 100 * self.em / n, "F1": 100 * self.f1 / n}
