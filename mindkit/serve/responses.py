"""OpenAI response objects (completion, chat completion, their stream chunks, usage) built from scheduler events.

Each route has a ``Collector``: it takes the scheduler's events for all choices of one HTTP request and yields
stream chunks, or the whole response at the end; both come from the same text deltas.
"""
import time
import uuid


def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Collector:
    """``chat``: chat.completion objects, else text_completion. ``choices``: how many choices (prompts x n)."""

    def __init__(self, model, choices, chat, tokenizer, n=1):
        self.model, self.chat, self.tokenizer, self.n = model, chat, tokenizer, n
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.text = [""] * choices
        self.logprobs = [[] for _ in range(choices)]
        self.finish = [None] * choices
        self.stop_reason = [None] * choices
        self.prompt_tokens = [0] * choices
        self.completion_tokens = [0] * choices
        self.started = [False] * choices
        self.pending = choices

    def add(self, event):
        """Record one event; returns the stream chunks it makes (possibly none)."""
        i = event["index"]
        if event.get("done"):
            self.finish[i], self.stop_reason[i] = event["finish_reason"], event["stop_reason"]
            self.prompt_tokens[i], self.completion_tokens[i] = event["prompt_tokens"], event["completion_tokens"]
            self.pending -= 1
            return [self.chunk(i, "", None, event["finish_reason"])]
        self.text[i] += event["text"]
        lp = self._logprob(event)
        if lp is not None:
            self.logprobs[i].append(lp)
        chunks = []
        if self.chat and not self.started[i]:
            self.started[i] = True
            chunks.append(self.chunk(i, None, None, None, role=True))
        if event["text"] or lp is not None:
            chunks.append(self.chunk(i, event["text"], lp, None))
        return chunks

    def _logprob(self, event):
        if event["logprob"] is None:
            return None
        token = self.tokenizer.decode([event["token"]], skip_special_tokens=False)
        value, top = event["logprob"]
        tops = [(self.tokenizer.decode([t], skip_special_tokens=False), v) for t, v in top]
        if self.chat:
            return {"token": token, "logprob": value, "bytes": list(token.encode()),
                    "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in tops]}
        return token, value, dict(tops)

    def _logprobs_object(self, entries, offset=0):
        if self.chat:
            return {"content": entries}
        offsets, pos = [], offset
        for token, _, _ in entries:
            offsets.append(pos)
            pos += len(token)
        return {"tokens": [e[0] for e in entries], "token_logprobs": [e[1] for e in entries],
                "top_logprobs": [e[2] for e in entries], "text_offset": offsets}

    def chunk(self, i, text, lp, finish, role=False):
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": i, "delta": delta, "logprobs": self._logprobs_object([lp]) if lp else None,
                      "finish_reason": finish}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": i, "text": text, "logprobs": self._logprobs_object([lp]) if lp else None,
                      "finish_reason": finish}
            kind = "text_completion"
        if finish is not None:
            choice["stop_reason"] = self.stop_reason[i]
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": [choice]}

    def usage_chunk(self):
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": [],
                "usage": self.usage()}

    def usage(self):
        # each prompt counts once, whatever n (choice i is prompt i // n)
        return usage(sum(self.prompt_tokens[::self.n]), sum(self.completion_tokens))

    def response(self):
        choices = []
        for i, text in enumerate(self.text):
            lp = self._logprobs_object(self.logprobs[i]) if self.logprobs[i] else None
            if self.chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": lp,
                                "finish_reason": self.finish[i], "stop_reason": self.stop_reason[i]})
            else:
                choices.append({"index": i, "text": text, "logprobs": lp, "finish_reason": self.finish[i],
                                "stop_reason": self.stop_reason[i]})
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": choices, "usage": self.usage()}


def yuan_response(ids, texts):
    return {"errCode": "0", "errMessage": "success", "exceptionMsg": "", "flag": True,
            "resData": {"output": [{"ans": t, "id": i} for i, t in zip(ids, texts)]}}


def yuan_error(message):
    return {"errCode": "1", "errMessage": message, "exceptionMsg": message, "flag": False, "resData": {}}
