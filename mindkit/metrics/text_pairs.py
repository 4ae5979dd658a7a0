"""What the text metrics share: predictions and references arrive as equally long lists of strings."""
from mindkit.errors import InputError


def check_pairs(preds, labels, metric):
    if len(preds) != len(labels):
        raise InputError(f"{metric}.update", f"{len(preds)} predictions and {len(labels)} references",
                         "one reference per prediction")
    bad = [i for i, t in enumerate(list(preds) + list(labels)) if not isinstance(t, str)]
    if bad:
        raise InputError(f"{metric}.update", type((list(preds) + list(labels))[bad[0]]).__name__, "text (str)")
