"""What the text metrics share: predictions and references arrive as equally long sequences of strings, and a
mismatch is the caller's mistake, reported by name rather than silently truncated by ``zip``."""
from mindkit.errors import InputError


def check_pairs(preds, labels, metric):
    for what, seq in (("predictions", preds), ("references", labels)):
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__len__"):
            raise InputError(f"{metric}.update", type(seq).__name__, f"a list of {what} (str)")
    if len(preds) != len(labels):
        raise InputError(f"{metric}.update", f"{len(preds)} predictions and {len(labels)} references",
                         "one reference per prediction")
    for what, seq in (("prediction", preds), ("reference", labels)):
        for i, text in enumerate(seq):
            if not isinstance(text, str):
                raise InputError(f"{metric}.update", f"{what} {i} of type {type(text).__name__}", "text (str)")
