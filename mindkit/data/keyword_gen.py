"""The keyword-generation task (MindFormers' ``KeyWordGenDataset``): a prompt (``content``) and its answer
(``summary``) as one training sequence whose loss covers only the answer.

Training items: ``input_ids`` = prompt ids (as the processor encodes prompts for predict: plain, or inside the chat
template) truncated to ``max_source_length`` (keeping its end, where a chat template puts the assistant turn), then
the answer ids truncated to ``max_target_length`` and EOS, right-padded to ``max_source_length +
max_target_length + 1``; ``labels`` = IGNORE on the prompt and (with ``ignore_pad_token_for_loss``) on padding.
Eval items: the prompt ids alone (to generate from, exactly as predict would) and the reference text.
"""
import logging

import numpy as np

from mindkit.errors import ConfigError
from mindkit.training.loss import IGNORE

logger = logging.getLogger("mindkit")


class KeyWordGenDataset:
    def __init__(self, pairs, processor, max_source_length, max_target_length, seq_length,
                 ignore_pad_token_for_loss=True, key="train_dataset"):
        self.processor, self.tok = processor, processor.tokenizer
        self.src_len, self.tgt_len = int(max_source_length), int(max_target_length)
        self.length = self.src_len + self.tgt_len + 1
        if self.length > seq_length:
            raise ConfigError(f"{key}.max_source_length + max_target_length",
                              f"{self.src_len} + {self.tgt_len} + 1 (EOS) = {self.length}",
                              f"at most model.model_config.seq_length ({seq_length})")
        self.pairs, self.ignore_pad = pairs, ignore_pad_token_for_loss
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else (self.tok.eos_token_id or 0)
        self.truncated = 0

    def prompt_ids(self, content):
        ids = self.processor.encode([content])[0]
        if len(ids) > self.src_len:
            self.truncated += 1
            ids = ids[-self.src_len:]
        return ids

    def train_item(self, content, summary):
        src = self.prompt_ids(content)
        tgt = self.tok.encode(summary, add_special_tokens=False)[:self.tgt_len]
        if self.tok.eos_token_id is not None:
            tgt = tgt + [self.tok.eos_token_id]
        ids = src + tgt
        labels = [IGNORE] * len(src) + tgt
        pad = self.length - len(ids)
        return {"input_ids": np.array(ids + [self.pad] * pad, np.int32),
                "labels": np.array(labels + [IGNORE if self.ignore_pad else self.pad] * pad, np.int32),
                "attention_mask": np.array([1] * len(ids) + [0] * pad, np.int32)}

    def train_items(self):
        items = [self.train_item(c, s) for c, s in self.pairs]
        if self.truncated:
            logger.info("%d of %d prompts were longer than max_source_length (%d) and kept their last tokens",
                        self.truncated, len(items), self.src_len)
        return items

    def eval_samples(self):
        return [(self.prompt_ids(c), s) for c, s in self.pairs]
