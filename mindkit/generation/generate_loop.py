"""The generate loop: token ids in, token ids out (ARCHITECTURE principle 3).

Prompts are left-padded into one batch and share cache slots; each row keeps its own RoPE positions and a
key-validity mask, so a prompt decodes the same alone or in a batch. The cache is preallocated for the longest
prompt plus the tokens to generate. Rows stop at EOS independently; the loop ends when all rows have.
"""
import dataclasses
import time

import numpy as np

from mindkit.errors import InputError
from mindkit.generation.config import GenerationConfig
from mindkit.generation.model_runner import ModelRunner
from mindkit.generation.sampling import Sampler


@dataclasses.dataclass
class GenerateOutput:
    sequences: list            # per row: prompt ids + generated ids (EOS included when hit)
    prompt_lengths: list
    generated_tokens: int      # over all rows, EOS counted
    time_to_first_token: float
    total_time: float
    decode_steps: int

    @property
    def new_tokens(self):
        return [seq[n:] for seq, n in zip(self.sequences, self.prompt_lengths)]

    @property
    def tokens_per_second(self):
        return self.generated_tokens / self.total_time if self.total_time > 0 else 0.0


def generate(model, prompts, gen: GenerationConfig = None, streamer=None, runner=None, **overrides):
    """``prompts``: a list of token-id lists (or one list). ``runner``: a ModelRunner to reuse (its caches and
    compiled steps); by default an op-by-op one. Returns a GenerateOutput."""
    cfg = model.config
    gen = gen or GenerationConfig.from_model_config(cfg)
    if overrides:
        gen = gen.updated(**overrides)
    if prompts and isinstance(prompts[0], (int, np.integer)):
        prompts = [prompts]
    prompts = [[int(t) for t in p] for p in prompts]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise InputError("prompt", "an empty prompt", "at least one token per prompt")
    lengths = [len(p) for p in prompts]
    if max(lengths) >= cfg.seq_length:
        raise InputError("prompt", f"{max(lengths)} tokens",
                         f"fewer than model_config.seq_length ({cfg.seq_length}) tokens")
    runner = runner or ModelRunner(model)
    B, longest = len(prompts), max(lengths)
    max_new = gen.new_tokens_for(longest, cfg.seq_length)
    P = runner.prompt_slots(longest, max_new)
    if streamer is not None:
        if B != 1:
            raise InputError("streamer", f"a batch of {B}", "one prompt when streaming")
        streamer.put(prompts[0])

    start_time = time.perf_counter()
    sequences = [list(p) for p in prompts]
    if max_new == 0:
        if streamer is not None:
            streamer.end()
        return GenerateOutput(sequences, lengths, 0, 0.0, 0.0, 0)
    S = runner.slots_for(P + max_new)
    runner.begin(B, S)
    # The whole left-padded sequence: token ids, RoPE positions, and which slots hold real tokens.
    ids = np.full((B, S), gen.pad_token_id, np.int32)
    valid = np.zeros((B, S), np.bool_)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):P] = p
        valid[b, P - len(p):P] = True
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)
    positions[:, P:] = np.asarray(lengths, np.int32)[:, None] + np.arange(S - P, dtype=np.int32)
    sampler = Sampler(gen)
    eos = set(gen.eos_token_id)
    done = np.zeros(B, np.bool_)
    seen = [set(p) for p in prompts] if gen.repetition_penalty != 1.0 else [()] * B

    # greedy: the step returns its argmax token ids, and no logits leave it
    out = runner.prefill(ids[:, :P], positions[:, :P], valid, sampler.greedy)
    ttft, generated, steps = None, 0, 0
    for step in range(max_new):
        next_ids = out if sampler.greedy else sampler(out, seen)
        if ttft is None:
            ttft = time.perf_counter() - start_time
        for b in range(B):
            if done[b]:
                next_ids[b] = gen.pad_token_id
                continue
            tok = int(next_ids[b])
            sequences[b].append(tok)
            generated += 1
            if gen.repetition_penalty != 1.0:
                seen[b].add(tok)
            if tok in eos:
                done[b] = True
        if streamer is not None and not done[0]:
            streamer.put([int(next_ids[0])])
        steps += 1
        if done.all() or step == max_new - 1:
            break
        slot = P + step
        ids[:, slot], valid[:, slot] = next_ids, True
        if cfg.use_past:
            out = runner.decode(ids[:, slot:slot + 1], positions[:, slot:slot + 1], valid, slot, sampler.greedy)
        else:  # MindFormers' use_past: False: no cache, the whole sequence again
            out = runner.prefill(ids[:, :slot + 1], positions[:, :slot + 1], valid, sampler.greedy)
    if streamer is not None:
        streamer.end()
    return GenerateOutput(sequences, lengths, generated, ttft or 0.0, time.perf_counter() - start_time, steps)
