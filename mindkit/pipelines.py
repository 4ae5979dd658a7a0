"""``pipeline(task="text_generation", model=..., tokenizer=...)``: MindFormers' predict in one Python call.

Prompts go through the same processor (chat template or plain text), batches, generation defaults and result format
(``[{'text_generation_text': [prompt + completion, ...]}]`` per batch) as ``run_mode: predict``.
"""
import dataclasses

from mindkit.errors import ConfigError, InputError
from mindkit.generation.config import GenerationConfig

TASKS = ("text_generation",)
GENERATE_KEYS = tuple(f.name for f in dataclasses.fields(GenerationConfig))


def pipeline(task="text_generation", model=None, tokenizer=None, streamer=None, batch_size=None,
             use_chat_template=None, system_prompt=None, **generate_kwargs):
    """``model``: a model name, a YAML path or folder (its processor section says how prompts are encoded, its
    ``predict_batch_size`` how many run together), or a built model (then ``tokenizer`` is needed and prompts are
    plain text unless ``use_chat_template``). ``generate_kwargs`` (``max_new_tokens``, ``do_sample``...) apply to
    every call; a call's own kwargs win. With a ``streamer``, prompts run one at a time."""
    from mindkit.auto import build, load_config, require_tokenizer_file
    from mindkit.tokenizers.processor import TextProcessor
    if task not in TASKS:
        raise ConfigError("task", task, "one of " + ", ".join(TASKS))
    if model is None:
        raise ConfigError("model", None, "a model name, a YAML path or folder, or a built model")
    settings = {}
    if isinstance(model, (str, dict)):
        config = load_config(model)
        settings = dict(config.section("processor"))
        if tokenizer is None:
            require_tokenizer_file(config)  # before minutes of loading weights
            from mindkit.runners.build import build_processor
            tokenizer = build_processor(config).tokenizer
        batch_size = batch_size or config.predict_batch_size
        model = build(config, load=True)
    if tokenizer is None:
        raise ConfigError("tokenizer", None, "a tokenizer (e.g. AutoTokenizer.from_pretrained(...)) with a built model")
    chat = settings.get("use_chat_template", False) if use_chat_template is None else use_chat_template
    processor = TextProcessor(tokenizer, use_chat_template=chat,
                              system_prompt=system_prompt or settings.get("system_prompt"))
    return TextGenerationPipeline(model, processor, streamer, batch_size or model.config.batch_size, generate_kwargs)


class TextGenerationPipeline:
    def __init__(self, model, processor, streamer, batch_size, generate_kwargs):
        check_generate_kwargs(generate_kwargs)
        self.model, self.processor, self.tokenizer = model, processor, processor.tokenizer
        self.streamer, self.batch_size, self.generate_kwargs = streamer, batch_size, generate_kwargs

    def __call__(self, inputs, batch_size=None, **generate_kwargs):
        from mindkit.generation.model_runner import ModelRunner
        from mindkit.runners.predict import batch_results, generate_batches, generation_config
        check_generate_kwargs(generate_kwargs)
        prompts = [inputs] if isinstance(inputs, str) else list(inputs)
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise InputError(f"inputs[{i}]", p, "a non-empty string")
        if not prompts:
            raise InputError("inputs", inputs, "a prompt or a list of prompts")
        model, tokenizer = self.model, self.tokenizer
        encoded = self.processor.encode(prompts, model.config.seq_length, key="inputs")
        gen = generation_config(model, tokenizer, **{**self.generate_kwargs, **generate_kwargs})
        size = 1 if self.streamer is not None else batch_size or self.batch_size
        runner = model.generation_runner() if hasattr(model, "generation_runner") else ModelRunner(model)
        sequences = generate_batches(model, runner, tokenizer, gen, encoded, prompts, size, echo=False,
                                     streamer=self.streamer)
        return batch_results(tokenizer, sequences, size)


def check_generate_kwargs(kwargs):
    for name in kwargs:
        if name not in GENERATE_KEYS:
            raise InputError(f"pipeline({name}=...)", kwargs[name], "a generation argument: " + ", ".join(GENERATE_KEYS))
