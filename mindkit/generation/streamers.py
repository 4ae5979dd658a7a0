"""Streamers receive token ids as they are generated (batch of one row) and emit text once it is final:
up to the last space/newline, or whole CJK characters, never half a UTF-8 sequence. HF/MindFormers interface."""
import queue
import sys


class TextStreamer:
    def __init__(self, tokenizer, skip_prompt=False, file=None, **decode_kwargs):
        self.tokenizer, self.skip_prompt, self.decode_kwargs = tokenizer, skip_prompt, decode_kwargs
        self.file = file
        self.token_cache, self.print_len, self.next_is_prompt = [], 0, True

    def put(self, value):
        ids = value.tolist() if hasattr(value, "tolist") else list(value)
        if ids and isinstance(ids[0], (list, tuple)):
            if len(ids) > 1:
                raise ValueError("TextStreamer streams one sequence; got a batch of %d" % len(ids))
            ids = ids[0]
        ids = [int(v) for v in ids]
        if self.skip_prompt and self.next_is_prompt:
            self.next_is_prompt = False
            return
        self.next_is_prompt = False
        self.token_cache.extend(ids)
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\n"):
            printable = text[self.print_len:]
            self.token_cache, self.print_len = [], 0
        elif text and _is_cjk(text[-1]):
            printable = text[self.print_len:]
            self.print_len += len(printable)
        elif text.endswith("\ufffd"):
            printable = ""  # an unfinished multi-byte character
        else:
            cut = text.rfind(" ") + 1
            printable = text[self.print_len:cut] if cut > self.print_len else ""
            self.print_len += len(printable)
        self.on_finalized_text(printable)

    def end(self):
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)[self.print_len:] if self.token_cache else ""
        self.token_cache, self.print_len, self.next_is_prompt = [], 0, True
        self.on_finalized_text(text, stream_end=True)

    def on_finalized_text(self, text, stream_end=False):
        out = self.file or sys.stdout
        out.write(text + ("\n" if stream_end else ""))
        out.flush()


class TextIteratorStreamer(TextStreamer):
    """Iterate over text pieces from another thread: ``for piece in streamer: ...`` (``timeout`` per piece)."""

    def __init__(self, tokenizer, skip_prompt=False, timeout=None, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.queue, self.timeout, self.stop_signal = queue.Queue(), timeout, object()

    def on_finalized_text(self, text, stream_end=False):
        if text:
            self.queue.put(text, timeout=self.timeout)
        if stream_end:
            self.queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self):
        value = self.queue.get(timeout=self.timeout)
        if value is self.stop_signal:
            raise StopIteration
        return value


def _is_cjk(ch):
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)
