"""Token ids → the text a client sees, piece by piece, with stop strings.

Streaming and non-streaming responses are both built from the same deltas, so streamed chunks always concatenate
to the non-streamed text. Text is released only once final: never half a UTF-8 character, never the beginning of
what may turn out to be a stop string (which is cut, as vLLM does by default).
"""
import numpy as np


class TextTracker:
    def __init__(self, tokenizer, stop=()):
        self.tokenizer, self.stop = tokenizer, tuple(stop)
        self.ids, self.sent, self.stopped_by = [], "", None

    def add(self, token):
        """Add one generated token; returns (new final text, whether a stop string ended the output)."""
        self.ids.append(int(token))
        full = self.tokenizer.decode(self.ids)
        hits = [(full.find(s), s) for s in self.stop if s in full]
        if hits:
            cut, self.stopped_by = min(hits)
            return self._release(full[:cut]), True
        return self._release(full[:len(full) - self._held_back(full)]), False

    def finish(self):
        """The rest of the text once the request ends (at EOS or max_tokens)."""
        if self.stopped_by is not None:
            return ""
        return self._release(self.tokenizer.decode(self.ids), final=True)

    def _held_back(self, full):
        hold = len(full) - len(full.rstrip("\ufffd"))  # an unfinished multi-byte character
        for s in self.stop:  # the longest tail of the text that begins a stop string
            for k in range(min(len(s) - 1, len(full)), 0, -1):
                if full.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return hold

    def _release(self, text, final=False):
        if not text.startswith(self.sent) or (len(text) <= len(self.sent) and not final):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta


def top_logprobs(logits, token, k):
    """(logprob of ``token``, [(id, logprob)] of the ``k`` most likely) under the model's raw distribution."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max()
    logp = shifted - np.log(np.exp(shifted).sum())
    best = np.argsort(-logp)[:k] if k else []
    return float(logp[token]), [(int(i), float(logp[i])) for i in best]
