"""The Python API, MindFormers' names: ``AutoConfig`` / ``AutoModel`` / ``AutoTokenizer`` (mindkit.auto),
``model.generate`` (mindkit.generation.mixin), ``pipeline`` (mindkit.pipelines), the streamers, and here
``Trainer(config, model=None, train_dataset=None, eval_dataset=None)`` with ``train()``, ``finetune()``,
``evaluate()`` and ``predict()``, what the CLI's run modes do.

``config`` is a model name, a YAML path or folder, a MindkitConfig, or a dict of YAML keys; ``overrides`` are
``{"a.b.c": value}`` like the CLI's free-form flags. A model (e.g. one built by ``mindkit.runners.build.build_model``) or datasets
(``mindkit.data.build_dataset``) passed in are used as they are.
"""
from mindkit.auto import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, load_config
from mindkit.generation.streamers import TextIteratorStreamer, TextStreamer
from mindkit.pipelines import pipeline

__all__ = ["AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoTokenizer", "TextIteratorStreamer", "TextStreamer",
           "Trainer", "pipeline"]


class Trainer:
    def __init__(self, config, model=None, train_dataset=None, eval_dataset=None, **overrides):
        self.config = load_config(config, overrides)
        self.model, self.train_dataset, self.eval_dataset = model, train_dataset, eval_dataset

    def _run(self, mode, runner_name, **parts):
        """Run a mode; a model it trained is kept, so a later evaluate() or predict() uses the trained weights."""
        from mindkit import registry
        self.config.run_mode = mode
        runner = registry.get("runner", runner_name)(self.config, **parts)
        result = runner.run()
        self.model = getattr(runner, "model", None) or self.model
        return result

    def train(self):
        """Returns the loss of every optimizer step."""
        return self._run("train", "train", model=self.model, dataset=self.train_dataset)

    def finetune(self):
        return self._run("finetune", "finetune", model=self.model, dataset=self.train_dataset)

    def evaluate(self):
        """Returns {metric name: {key: value}}."""
        return self._run("eval", "eval", model=self.model, dataset=self.eval_dataset)

    def predict(self, input_data=None):
        """Returns MindFormers' list of {'text_generation_text': [...]} per batch."""
        if input_data is not None:
            self.config.input_data = input_data if isinstance(input_data, (list, str)) else list(input_data)
        return self._run("predict", "predict", model=self.model)
