"""``model.generate(...)`` as MindFormers users call it: its argument names, defaults from ``model.config``
(``max_decode_length``, ``top_k``, ...), prompt + new ids back. The engine (generate_loop) does the work; this only
translates the call, so predict, the server and Python users share one loop.
"""
import numpy as np

from mindkit.errors import InputError


def as_prompts(input_ids, pad_token_id):
    """One id list, a list of id lists (any lengths), a 1-D array, or a (B, L) array right-padded with
    ``pad_token_id`` (MindFormers' batch input: trailing pads are not part of the prompt)."""
    if hasattr(input_ids, "asnumpy"):
        input_ids = input_ids.asnumpy()
    if isinstance(input_ids, np.ndarray):
        if input_ids.ndim == 1:
            return [input_ids.tolist()]
        if input_ids.ndim != 2 or not np.issubdtype(input_ids.dtype, np.integer):
            raise InputError("input_ids", f"an array of {input_ids.dtype}, shape {input_ids.shape}",
                             "a 1-D or 2-D array of integer token ids")
        rows = [row.tolist() for row in input_ids]
        return [row[:max((i + 1 for i, t in enumerate(row) if t != pad_token_id), default=0)] for row in rows]
    if isinstance(input_ids, (list, tuple)) and input_ids:
        if all(isinstance(t, (int, np.integer)) for t in input_ids):
            return [list(input_ids)]
        if all(isinstance(row, (list, tuple, np.ndarray)) for row in input_ids):
            return [list(np.asarray(row).tolist()) for row in input_ids]
    raise InputError("input_ids", type(input_ids).__name__,
                     "a list of token ids, a list of such lists, or a numpy array")


class GenerationMixin:
    """Mixed into a model with ``config`` (its generation defaults) and the call signature the ModelRunner uses."""

    compiled_generate = False  # context.mode 0: compiled prefill/decode steps (AutoModel sets it from the config)

    def generate(self, input_ids, generation_config=None, max_length=None, max_new_tokens=None, do_sample=None,
                 top_k=None, top_p=None, temperature=None, repetition_penalty=None, eos_token_id=None,
                 pad_token_id=None, streamer=None, seed=None, **kwargs):
        """Returns a list per prompt: its ids followed by the generated ones (the EOS included when reached).
        Arguments left None come from ``generation_config`` or else ``self.config``; ``max_length`` counts the
        prompt, ``max_new_tokens`` does not and wins when both are given. A ``streamer`` takes one prompt."""
        from mindkit.generation.config import GenerationConfig
        from mindkit.generation.generate_loop import generate
        if kwargs:
            name = sorted(kwargs)[0]
            raise InputError(f"generate({name}=...)", kwargs[name], "one of the arguments of generate: "
                             "generation_config, max_length, max_new_tokens, do_sample, top_k, top_p, temperature, "
                             "repetition_penalty, eos_token_id, pad_token_id, streamer, seed")
        gen = (generation_config or GenerationConfig.from_model_config(self.config)).updated(
            max_length=max_length, max_new_tokens=max_new_tokens, do_sample=do_sample, top_k=top_k, top_p=top_p,
            temperature=temperature, repetition_penalty=repetition_penalty, eos_token_id=eos_token_id,
            pad_token_id=pad_token_id, seed=seed)
        prompts = as_prompts(input_ids, gen.pad_token_id)
        vocab = self.config.vocab_size
        for i, prompt in enumerate(prompts):
            bad = [t for t in prompt if not 0 <= int(t) < vocab]
            if bad:
                raise InputError(f"input_ids[{i}]", bad[0], f"token ids in [0, vocab_size={vocab})")
        return generate(self, prompts, gen, streamer=streamer, runner=self.generation_runner()).sequences

    def generation_runner(self):
        """One ModelRunner per model, so KV caches and compiled steps are reused from call to call."""
        cached = self.__dict__.get("_generation_runner")
        if cached is None or cached[0] != self.compiled_generate:
            from mindkit.generation.model_runner import ModelRunner
            cached = (self.compiled_generate, ModelRunner(self, compiled=self.compiled_generate))
            self.__dict__["_generation_runner"] = cached
        return cached[1]
