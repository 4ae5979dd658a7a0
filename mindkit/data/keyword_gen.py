"""The keyword-generation task (MindFormers' ``KeyWordGenDataset``): a prompt (``content``) and its answer
(``summary``) as one training sequence whose loss covers only the answer, and the same prompt alone for eval.

Prompt: the content as predict encodes it — by default plain text with the tokenizer's specials (BOS for Llama),
as MindFormers' Llama/GLM ADGEN task feeds it; inside the model's chat template when
``processor.use_chat_template`` is on; and, when the dataset section sets ``prompt_template`` (a string holding
``{content}``), that text is wrapped first. Truncation keeps the first ``max_source_length`` tokens as MindFormers
does, except that a template's tail (the tokens after the content, e.g. the assistant turn opener) is always kept:
the content is what gets cut, so training, eval and predict prompts end alike.

Training item (all int32, length ``max_source_length + max_target_length + 1``, MindFormers' ``max_seq_length``):
  input_ids       prompt ids + answer ids (truncated to ``max_target_length``) + EOS, right-padded with the pad id
  labels          IGNORE (-100) on the prompt; the answer ids and EOS where they stand in input_ids (the loss
                  shifts); on padding IGNORE with ``ignore_pad_token_for_loss: True``, else the pad id
  attention_mask  1 on prompt and answer, 0 on padding
Unlike MindFormers, masking is by position (an answer token equal to the pad id still carries loss) and the prompt
is masked whatever ``ignore_pad_token_for_loss`` says (MindFormers labels it with pad ids when False).
Eval sample: (prompt ids, unpadded — exactly what generation starts from; the reference summary text).
"""
import logging

import numpy as np

from mindkit.errors import ConfigError
from mindkit.training.loss import IGNORE

logger = logging.getLogger("mindkit")

PLACEHOLDER = "{content}"


class KeyWordGenDataset:
    def __init__(self, processor, max_source_length, max_target_length, seq_length, ignore_pad_token_for_loss=True,
                 prompt_template=None, key="train_dataset"):
        self.processor, self.tok, self.key = processor, processor.tokenizer, key
        self.src_len, self.tgt_len = _positive(key, "max_source_length", max_source_length), \
            _positive(key, "max_target_length", max_target_length)
        self.length = self.src_len + self.tgt_len + 1
        if self.length > seq_length:
            raise ConfigError(f"{key}.max_source_length + {key}.max_target_length",
                              f"{self.src_len} + {self.tgt_len} + 1 (EOS) = {self.length} tokens",
                              f"at most model.model_config.seq_length ({seq_length})",
                              hint="lower them or raise seq_length")
        if prompt_template is not None and (not isinstance(prompt_template, str) or PLACEHOLDER not in prompt_template):
            raise ConfigError(f"{key}.prompt_template", prompt_template, f"a string holding {PLACEHOLDER}")
        self.template, self.ignore_pad = prompt_template, bool(ignore_pad_token_for_loss)
        self.pad = next((t for t in (self.tok.pad_token_id, self.tok.eos_token_id, 0) if t is not None), 0)
        self.tail = self._wrapper_tail()
        self.truncated = 0

    def _encode(self, content):
        text = self.template.replace(PLACEHOLDER, content) if self.template else content
        return self.processor.encode([text])[0]

    def _wrapper_tail(self):
        """Tokens the prompt wrapping puts after the content: the common suffix of two probe prompts."""
        empty, probe = self._encode(""), self._encode("x")
        tail = 0
        while tail < min(len(empty), len(probe)) and empty[-1 - tail] == probe[-1 - tail]:
            tail += 1
        if tail >= self.src_len:
            raise ConfigError(f"{self.key}.max_source_length", self.src_len,
                              f"more than the {tail} tokens the prompt template/chat template adds after the content")
        return tail

    def prompt_ids(self, content):
        ids = self._encode(content)
        if len(ids) <= self.src_len:
            return ids
        self.truncated += 1
        return ids[:self.src_len - self.tail] + ids[len(ids) - self.tail:]

    def answer_ids(self, summary):
        ids = self.tok.encode(summary, add_special_tokens=False)[:self.tgt_len]
        return ids + ([self.tok.eos_token_id] if self.tok.eos_token_id is not None else [])

    def train_item(self, prompt, summary):
        answer = self.answer_ids(summary)
        ids, pad = prompt + answer, self.length - len(prompt) - len(answer)
        labels = [IGNORE] * len(prompt) + answer + [IGNORE if self.ignore_pad else self.pad] * pad
        return {"input_ids": np.array(ids + [self.pad] * pad, np.int32),
                "labels": np.array(labels, np.int32),
                "attention_mask": np.array([1] * len(ids) + [0] * pad, np.int32)}

    def build(self, pairs):
        """(training items, eval samples) for (content, summary) pairs, in order; prompts encoded once."""
        self.truncated = 0
        prompts = [self.prompt_ids(content) for content, _ in pairs]
        if self.truncated:
            logger.info("%s: %d of %d prompts were longer than max_source_length (%d) and were cut", self.key,
                        self.truncated, len(pairs), self.src_len)
        items = [self.train_item(p, summary) for p, (_, summary) in zip(prompts, pairs)]
        return items, [(p, summary) for p, (_, summary) in zip(prompts, pairs)]


def _positive(key, name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}.{name}", value, "an integer >= 1")
    return value
