"""Shared fixtures: a tiny sentencepiece tokenizer trained here, and a tiny random Llama checkpoint."""
import io
import os
import random

import mindspore as ms
import pytest

# Op-by-op dispatch on CPU is ~9x faster with blocking launches (what `context.mode: 1` runs set up too).
ms.set_device("CPU")
ms.runtime.launch_blocking()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "configs", "tiny", "predict_tiny_llama.yaml")
SMOLLM2_CONFIG = os.path.join(REPO, "configs", "smollm2", "predict_smollm2_135m.yaml")

_WORDS = ("the a cat dog sat on mat ran far away big small red blue green tree house car road river sun moon star "
          "day night good bad happy sad one two three four five we they love see eat run walk").split()


def make_sentences(n=400, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))).capitalize() + rng.choice(".!?")
            for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_sp_model(tmp_path_factory):
    """A sentencepiece BPE model (vocab 200; unk 0, bos 1, eos 2) trained in a second."""
    import sentencepiece as spm
    path = tmp_path_factory.mktemp("sp") / "tokenizer.model"
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(make_sentences()), model_writer=buf, vocab_size=200,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   minloglevel=2)
    path.write_bytes(buf.getvalue())
    return str(path)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A random tiny Llama (the shape of configs/tiny) saved as a MindSpore .ckpt with MindFormers names."""
    import mindspore as ms
    from mindkit.checkpoint import save_state
    from mindkit.config import load_yaml
    from mindkit.models import LlamaConfig, LlamaForCausalLM
    ms.set_device("CPU")
    ms.set_seed(0)
    cfg = LlamaConfig.from_dict(load_yaml(TINY_CONFIG)["model"]["model_config"])
    model = LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_llama.ckpt"
    save_state({p.name: p.asnumpy() for p in model.get_parameters()}, str(path))
    return str(path)


@pytest.fixture
def tiny_args(tiny_ckpt, tiny_sp_model, tmp_path, monkeypatch):
    """Command-line arguments for a tiny predict run inside tmp_path."""
    monkeypatch.chdir(tmp_path)
    return ["--config", TINY_CONFIG, "--load_checkpoint", tiny_ckpt,
            f"--processor.tokenizer.vocab_file={tiny_sp_model}", "--output_dir", str(tmp_path / "output")]
