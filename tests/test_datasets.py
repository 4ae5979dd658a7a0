"""Datasets for eval and finetune (mindkit/data): ADGEN lines, the keyword-generation items, packed text blocks,
shuffles, resume positions, data-parallel shards and the errors, on a sentencepiece model trained here on the
shipped ADGEN sample's Chinese text."""
import importlib.util
import io
import json
import logging
import os

import numpy as np
import pytest

from conftest import REPO
from mindkit.errors import ConfigError, InputError

SAMPLE = os.path.join(REPO, "data", "adgen_sample")
TRAIN, DEV = os.path.join(SAMPLE, "train.json"), os.path.join(SAMPLE, "dev.json")


def sample_records(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture(scope="module")
def zh_tokenizer(tmp_path_factory):
    """LlamaTokenizer over a sentencepiece model of the sample's text (unk 0, bos 1, eos 2, pad 3)."""
    import sentencepiece as spm
    from mindkit.tokenizers import LlamaTokenizer
    texts = [v for path in (TRAIN, DEV) for r in sample_records(path) for v in r.values()]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buf, vocab_size=160, model_type="bpe",
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2, character_coverage=1.0)
    path = tmp_path_factory.mktemp("zh") / "zh.model"
    path.write_bytes(buf.getvalue())
    return LlamaTokenizer(vocab_file=str(path), pad_token="<pad>")


@pytest.fixture
def processor(zh_tokenizer):
    from mindkit.tokenizers import TextProcessor
    return TextProcessor(tokenizer=zh_tokenizer)


@pytest.fixture
def log_text():
    """Text logged on the mindkit logger during the test (it does not propagate once a CLI run set it up)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("mindkit")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream.getvalue
    logger.removeHandler(handler)
    logger.setLevel(level)


def config(**sections):
    from mindkit.config.sections import MindkitConfig
    return MindkitConfig.from_dict({"seed": 7, "runner_config": {"batch_size": 2}, **sections})


def adgen(path=TRAIN, loader=None, **extra):
    return {"data_loader": {"type": "ADGenDataLoader", "dataset_dir": str(path), "shuffle": True, **(loader or {})},
            "max_source_length": 24, "max_target_length": 40, "batch_size": 4, **extra}


def build(processor, section=None, name="train_dataset", seq_length=128, **kwargs):
    from mindkit.data import build_dataset
    return build_dataset(config(**{name: section or adgen()}), name, processor, seq_length, **kwargs)


def ids_of(batches):
    return [b["input_ids"].tolist() for b in batches]


# ---- ADGEN lines ----------------------------------------------------------------------------------------------------

def test_adgen_loader_skips_and_counts_bad_lines(tmp_path, log_text):
    from mindkit.data import ADGenDataLoader
    lines = ['{"content": "类型#裙", "summary": "好看的裙子"}', "", "not json", '{"content": "类型#裤"}',
             '{"content": "类型#衬衫", "summary": 3}', '{"content": "  ", "summary": "空"}', "[1, 2]",
             '{"content": "类型#外套", "summary": "保暖"}']
    path = tmp_path / "mixed.json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    loader = ADGenDataLoader(str(path), phase="train", num_parallel_workers=8, python_multiprocessing=False)
    assert loader.samples == [("类型#裙", "好看的裙子"), ("类型#外套", "保暖")]
    (line,) = [x for x in log_text().splitlines() if "skipped" in x]   # one line for all of them
    assert "skipped 5 bad line(s) (first: line 3;" in line and "not a JSON object: 2" in line
    assert "content x3, summary x4" in line and "kept 2" in line
    assert "ignoring keys" not in log_text()   # pipeline keys are accepted silently


def test_adgen_loader_errors_name_the_key_and_path(tmp_path):
    from mindkit.data import ADGenDataLoader
    missing = tmp_path / "nope.json"
    for name in ("train_dataset", "eval_dataset"):
        with pytest.raises(InputError, match=f"{name}.data_loader.dataset_dir: got '{missing}'"):
            ADGenDataLoader(str(missing), key=f"{name}.data_loader")
    cases = {"no_summary.json": ('{"content": "类型#裙"}\n{"content": "类型#裤", "summary": ""}\n',
                                 "'summary' missing or not text on every line \\(2\\)"),
             "no_content.json": ('{"summary": "好看"}\n', "'content' missing or not text on every line"),
             "garbage.json": ("a\nb\n", "none of its 2 line\\(s\\) is a JSON object"),
             "empty.json": ("\n\n", "the file has no records"),
             "mixed.json": ('{"content": "类型#裙"}\n{"summary": "好看"}\n', "no usable line among 2")}
    for file, (text, needle) in cases.items():
        (tmp_path / file).write_text(text, encoding="utf-8")
        with pytest.raises(InputError, match=needle) as e:
            ADGenDataLoader(str(tmp_path / file), key="eval_dataset.data_loader")
        assert str(e.value).startswith(f"eval_dataset.data_loader.dataset_dir: got '{tmp_path / file}'")
    (tmp_path / "latin1.json").write_bytes('{"content": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match="a UTF-8 text file"):
        ADGenDataLoader(str(tmp_path / "latin1.json"))
    with pytest.raises(ConfigError, match="train_dataset.data_loader.phase: got 'dev'"):
        ADGenDataLoader(TRAIN, phase="dev")
    with pytest.raises(ConfigError, match="origin_columns"):
        ADGenDataLoader(TRAIN, origin_columns=["content"])


def test_origin_columns_pick_other_keys(tmp_path):
    from mindkit.data import ADGenDataLoader
    path = tmp_path / "qa.json"
    path.write_text('{"question": "类型#裙", "answer": "好看", "content": "x"}\n', encoding="utf-8")
    assert ADGenDataLoader(str(path), origin_columns=["question", "answer"]).samples == [("类型#裙", "好看")]


# ---- keyword-generation items ---------------------------------------------------------------------------------------

def test_items_mask_the_prompt_and_padding_and_end_with_eos(processor, zh_tokenizer):
    tok = zh_tokenizer
    data = build(processor, adgen(loader={"shuffle": False}))
    records = sample_records(TRAIN)
    batch = next(data.batches(0))
    assert {k: (v.dtype, v.shape) for k, v in batch.items()} == {
        k: (np.dtype(np.int32), (4, 24 + 40 + 1)) for k in ("input_ids", "labels", "attention_mask")}
    for r, ids, labels, mask in zip(records, batch["input_ids"], batch["labels"], batch["attention_mask"]):
        prompt = tok.encode(r["content"])                       # as predict encodes it: BOS + content
        answer = tok.encode(r["summary"], add_special_tokens=False) + [tok.eos_token_id]
        n, p = len(prompt) + len(answer), len(prompt)
        assert prompt[0] == tok.bos_token_id and p <= 24 and len(answer) <= 41
        assert ids.tolist() == prompt + answer + [tok.pad_token_id] * (65 - n)
        assert labels.tolist() == [-100] * p + answer + [-100] * (65 - n)
        assert mask.tolist() == [1] * n + [0] * (65 - n)
        assert tok.decode(ids[p:n].tolist()) == tok.decode(tok.encode(r["summary"]))   # (NFKC: ， -> ,)


def test_without_ignore_pad_padding_is_labelled_with_the_pad_id(processor, zh_tokenizer):
    data = build(processor, adgen(loader={"shuffle": False}, ignore_pad_token_for_loss=False))
    batch = next(data.batches(0))
    for labels, mask in zip(batch["labels"], batch["attention_mask"]):
        n = int(mask.sum())
        assert set(labels[n:].tolist()) == {zh_tokenizer.pad_token_id} and labels[0] == -100
        assert labels[n - 1] == zh_tokenizer.eos_token_id


def test_truncation_lengths(processor, zh_tokenizer, tmp_path):
    from mindkit.data import KeyWordGenDataset
    tok, content, summary = zh_tokenizer, "类型#裙*颜色#白色*风格#清新*图案#碎花*版型#宽松", "这款白色裙采用碎花设计，宽松的版型穿着舒适。"
    full_prompt, full_answer = tok.encode(content), tok.encode(summary, add_special_tokens=False)
    assert len(full_prompt) > 6 and len(full_answer) > 5
    task = KeyWordGenDataset(processor, 6, 5, seq_length=12)
    (item,), ((prompt, reference),) = task.build([(content, summary)])
    assert prompt == full_prompt[:6] and reference == summary          # the head is kept: BOS + first tokens
    assert item["input_ids"].tolist() == full_prompt[:6] + full_answer[:5] + [tok.eos_token_id]
    assert item["labels"].tolist() == [-100] * 6 + full_answer[:5] + [tok.eos_token_id]
    assert task.truncated == 1


def test_a_template_tail_survives_truncation(processor, zh_tokenizer):
    from mindkit.data import KeyWordGenDataset
    from mindkit.tokenizers import TextProcessor
    content = "类型#裙*颜色#白色*风格#清新*图案#碎花*版型#宽松"
    template = "{content}</s><s>版型"            # a wrapper that ends after the content
    task = KeyWordGenDataset(processor, 8, 8, 64, prompt_template=template)
    full = processor.encode([template.replace("{content}", content)])[0]
    tail = processor.encode([template.replace("{content}", "")])[0][-3:]   # </s> <s> 版型
    assert task.tail >= 3 and full[-3:] == tail
    prompt = task.prompt_ids(content)
    assert len(prompt) == 8 and prompt[-task.tail:] == full[-task.tail:] and prompt[:8 - task.tail] == \
        full[:8 - task.tail]
    zh_tokenizer.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}#{{ m['content'] }}</s>{% endfor %}"
                                  "{% if add_generation_prompt %}<s>版型{% endif %}")
    try:
        chat = TextProcessor(tokenizer=zh_tokenizer, use_chat_template=True)
        task = KeyWordGenDataset(chat, 10, 8, 64)
        full = chat.encode([content])[0]
        prompt = task.prompt_ids(content)
        assert len(full) > 10 and len(prompt) == 10 and prompt[-3:] == full[-3:] and prompt[0] == 1
        with pytest.raises(ConfigError, match="train_dataset.max_source_length: got 3"):
            KeyWordGenDataset(chat, 3, 8, 64)
    finally:
        zh_tokenizer.chat_template = None
    with pytest.raises(ConfigError, match="prompt_template"):
        KeyWordGenDataset(processor, 8, 8, 64, prompt_template="no placeholder")


def test_seq_length_too_small_names_both_lengths_and_the_model_key(processor):
    for name in ("train_dataset", "eval_dataset"):
        with pytest.raises(ConfigError) as e:
            build(processor, adgen(max_source_length=24, max_target_length=40), name=name, seq_length=64)
        message = str(e.value)
        assert message.startswith(f"{name}.max_source_length + {name}.max_target_length: got '24 + 40 + 1")
        assert "= 65 tokens" in message and "model.model_config.seq_length (64)" in message
    assert build(processor, seq_length=65).batcher.items[0]["input_ids"].shape == (65,)   # exactly enough


def test_eval_samples_are_unpadded_prompts_and_reference_texts(processor, zh_tokenizer):
    section = adgen(DEV, loader={"shuffle": False, "phase": "eval"}, drop_remainder=False, batch_size=5)
    data = build(processor, section, name="eval_dataset")
    records = sample_records(DEV)
    assert data.samples == [(zh_tokenizer.encode(r["content"]), r["summary"]) for r in records]
    assert data.num_batches == 4 and [len(b["input_ids"]) for b in data.batches(0)] == [5, 5, 5, 1]
    halves = [build(processor, section, name="eval_dataset", data_parallel=2, rank=r).eval_samples() for r in (0, 1)]
    assert halves[0] + halves[1] == data.samples and len(halves[0]) == 8


# ---- shuffle, resume, shards ----------------------------------------------------------------------------------------

def test_shuffle_is_fixed_by_seed_and_epoch(processor):
    first, again = build(processor), build(processor)
    epochs = [ids_of(first.batches(e)) for e in range(3)]
    assert epochs == [ids_of(again.batches(e)) for e in range(3)]          # same seed: same batches
    assert epochs[0] != epochs[1] != epochs[2]                               # a fresh order every epoch
    everything = sorted(map(tuple, (row for b in epochs[0] for row in b)))
    assert all(sorted(map(tuple, (row for b in e for row in b))) == everything for e in epochs)   # a permutation
    assert len(everything) == 64 and first.num_batches == 16
    other = build(processor, adgen(seed=8))
    assert ids_of(other.batches(0)) != epochs[0]
    plain = build(processor, adgen(loader={"shuffle": False}))
    assert ids_of(plain.batches(0)) == ids_of(plain.batches(1))
    assert first.batcher.seed == 7 and other.batcher.seed == 8              # default: the run's seed


def test_resume_from_any_epoch_and_step_yields_exactly_the_rest(processor):
    data = build(processor, adgen(batch_size=3, drop_remainder=False))
    assert data.num_batches == 22
    for epoch in (0, 3):
        whole = ids_of(data.batches(epoch))
        for start in (0, 1, 9, 21, 22):
            assert ids_of(build(processor, adgen(batch_size=3, drop_remainder=False)).batches(epoch, start)) == \
                whole[start:]
    with pytest.raises(InputError, match="train_dataset \\(resume\\): got 'step 23 of epoch 0'"):
        data.batches(0, 23)


@pytest.mark.parametrize("world, size, drop", [(2, 3, True), (4, 3, True), (2, 3, False), (3, 2, False)])
def test_data_parallel_shards_concatenate_to_the_single_process_batch(processor, world, size, drop):
    single = build(processor, adgen(batch_size=size * world, drop_remainder=drop))
    ranks = [build(processor, adgen(batch_size=size, drop_remainder=drop), data_parallel=world, rank=r)
             for r in range(world)]
    assert {r.num_batches for r in ranks} == {single.num_batches}
    for epoch in (0, 1):
        shares = [list(r.batches(epoch, 2)) for r in ranks]
        for whole, parts in zip(single.batches(epoch, 2), zip(*shares)):
            for k in whole:
                assert np.array_equal(np.concatenate([p[k] for p in parts]), whole[k])
    sharded = single.shard(1, 2)
    assert sharded.rank == 1 and sharded.data_parallel == 2 and sharded.batch_size == single.batch_size


def test_a_last_batch_too_small_for_every_rank_is_dropped_on_all(processor, log_text):
    # 64 samples, global batch 3 x 4 = 12: 5 full batches and 4 left, one per rank; with 5 per rank, 4 < 5 ranks
    fits = [build(processor, adgen(batch_size=3, drop_remainder=False), data_parallel=4, rank=r) for r in range(4)]
    assert [len(list(f.batches(0))[-1]["input_ids"]) for f in fits] == [1, 1, 1, 1]
    short = [build(processor, adgen(batch_size=2, drop_remainder=False, num_samples=13), data_parallel=5, rank=r)
             for r in range(5)]
    assert {s.num_batches for s in short} == {1} and "left out of every epoch" in log_text()


def test_num_samples_takes_a_fixed_subset_after_the_seed_shuffle(processor):
    from mindkit.data.batching import choose_samples
    data = build(processor, adgen(num_samples=8, batch_size=2))
    rows = [sorted(tuple(row) for b in ids_of(data.batches(e)) for row in b) for e in range(3)]
    assert len(rows[0]) == 8 and rows[0] == rows[1] == rows[2]               # the same 8 every epoch
    chosen = choose_samples(64, 8, True, 7)
    assert chosen.tolist() == sorted(np.random.default_rng([7]).permutation(64)[:8].tolist())
    assert chosen.tolist() != list(range(8))
    plain = build(processor, adgen(DEV, loader={"shuffle": False}, num_samples=4), name="eval_dataset")
    assert [ref for _, ref in plain.samples] == [r["summary"] for r in sample_records(DEV)[:4]]


# ---- plain text blocks ----------------------------------------------------------------------------------------------

def text_section(path, **loader):
    return {"data_loader": {"type": "TextDataLoader", "dataset_dir": str(path), "shuffle": False, **loader},
            "batch_size": 2, "drop_remainder": False}


def test_text_is_packed_into_seq_length_blocks(processor, zh_tokenizer, tmp_path, log_text):
    docs = [r["summary"] for r in sample_records(DEV)]
    path = tmp_path / "domain.txt"
    path.write_text("\n".join(docs[:8]) + "\n\n", encoding="utf-8")
    data = build(processor, text_section(path), seq_length=16)
    stream = [t for d in docs[:8] for t in zh_tokenizer.encode(d) + [zh_tokenizer.eos_token_id]]
    blocks = [row for b in data.batches(0) for row in b["input_ids"].tolist()]
    assert [t for row in blocks for t in row] == stream[:len(stream) // 16 * 16] and len(blocks) == len(stream) // 16
    batch = next(data.batches(0))
    assert np.array_equal(batch["labels"], batch["input_ids"]) and batch["attention_mask"].all()
    assert batch["input_ids"].dtype == np.int32 and batch["input_ids"].shape == (2, 16)
    assert f"the last {len(stream) % 16} tokens are not used" in log_text()
    whole = build(processor, text_section(path, document_per_line=False), seq_length=16)
    first = next(whole.batches(0))["input_ids"][0].tolist()
    assert first == (zh_tokenizer.encode("\n".join(docs[:8]).strip()) + [2])[:16]


def test_token_files_npy_and_bin(processor, tmp_path):
    ids = np.arange(100, dtype=np.int64) % 150
    np.save(tmp_path / "tokens.npy", ids.reshape(10, 10))
    ids.astype(np.uint16).tofile(tmp_path / "tokens.bin")
    expected = ids[:96].reshape(6, 16).tolist()
    for path, loader in ((tmp_path / "tokens.npy", {}), (tmp_path / "tokens.bin", {"token_dtype": "uint16"})):
        data = build(processor, {**text_section(path, **loader)}, seq_length=16)
        assert [row for b in data.batches(0) for row in b["input_ids"].tolist()] == expected
    section = {**text_section(tmp_path / "tokens.npy"), "data_loader": {
        "type": "TextDataLoader", "dataset_dir": str(tmp_path / "tokens.npy"), "shuffle": True}}
    shuffled = build(processor, section, seq_length=16)
    assert sorted(row for b in shuffled.batches(0) for row in b["input_ids"].tolist()) == sorted(expected)


def test_text_errors_name_the_key(processor, tmp_path):
    cases = [(tmp_path / "missing.txt", {}, InputError, "train_dataset.data_loader.dataset_dir: got"),
             (tmp_path / "notes.md", {}, InputError, "an existing .txt file"),
             (tmp_path / "short.txt", {}, InputError, "at least model.model_config.seq_length \\(128\\) tokens"),
             (tmp_path / "odd.bin", {}, InputError, "a whole number of int32 ids"),
             (tmp_path / "neg.npy", {}, InputError, "non-negative integer token ids"),
             (tmp_path / "odd.bin", {"token_dtype": "float32"}, ConfigError, "data_loader.token_dtype")]
    (tmp_path / "notes.md").write_text("hello", encoding="utf-8")
    (tmp_path / "short.txt").write_text("类型#裙\n", encoding="utf-8")
    (tmp_path / "odd.bin").write_bytes(b"\x01\x00\x00")
    np.save(tmp_path / "neg.npy", np.array([1, -1] * 100))
    for path, loader, error, needle in cases:
        with pytest.raises(error, match=needle):
            build(processor, text_section(path, **loader))


# ---- the builder ----------------------------------------------------------------------------------------------------

def test_task_section_merge_pipeline_keys_and_a_bare_tokenizer(processor, zh_tokenizer, log_text):
    from mindkit.data import build_dataset
    task = {"type": "KeyWordGenDataset", "dataset_config": {**adgen(), "num_parallel_workers": 8,
                                                             "python_multiprocessing": False, "prefetch_size": 1,
                                                             "numa_enable": False, "repeat": 1,
                                                             "input_columns": ["prompt", "answer"],
                                                             "output_columns": ["input_ids", "labels"]}}
    cfg = config(train_dataset_task=task, train_dataset={"batch_size": 8, "data_loader": {"shuffle": False}})
    data = build_dataset(cfg, "train_dataset", zh_tokenizer, 128)          # a tokenizer: plain prompts
    assert data.batch_size == 8 and not data.batcher.shuffle and data.num_batches == 8
    assert ids_of(data.batches(0)) == ids_of(build(processor, adgen(batch_size=8, loader={"shuffle": False}))
                                             .batches(0))
    assert "ignoring" not in log_text()
    build(processor, adgen(bogus_key=1))
    assert "train_dataset: ignoring keys mindkit does not use: bogus_key" in log_text()
    runner_default = build(processor, {k: v for k, v in adgen().items() if k != "batch_size"})
    assert runner_default.batch_size == 2                                    # runner_config.batch_size


def test_builder_errors_name_the_key(processor, tmp_path):
    from mindkit.data import build_dataset
    (tmp_path / "t.txt").write_text("x" * 10, encoding="utf-8")
    cases = [({"train_dataset_task": {"type": "KeyWordGenDataset", "dataset_config": text_section(tmp_path / "t.txt")}},
              ConfigError, "train_dataset.data_loader.type: got 'TextDataLoader'"),
             ({"train_dataset_task": {"type": "MultiTurnDataset", "dataset_config": adgen()}},
              ConfigError, "train_dataset_task.type: got 'MultiTurnDataset'"),
             ({"train_dataset": adgen(loader={"type": "NoSuchLoader"})},
              ConfigError, "train_dataset.data_loader.type: got 'NoSuchLoader'"),
             ({}, ConfigError, "train_dataset: expected a train_dataset section"),
             ({"train_dataset": {"data_loader": {"type": "ADGenDataLoader"}}}, ConfigError,
              "train_dataset.data_loader: got"),
             ({"train_dataset": adgen(batch_size=0)}, ConfigError, "train_dataset.batch_size: got 0"),
             ({"train_dataset": adgen(batch_size=65)}, InputError, "train_dataset.batch_size: got 65"),
             ({"train_dataset": adgen(max_source_length="long")}, ConfigError,
              "train_dataset.max_source_length: got 'long'")]
    for sections, error, needle in cases:
        with pytest.raises(error, match=needle):
            build_dataset(config(**sections), "train_dataset", processor, 128)


def test_registered_under_dataset():
    from mindkit import registry
    assert {"ADGenDataLoader", "TextDataLoader"} <= set(registry.names("dataset"))


# ---- the shipped sample ---------------------------------------------------------------------------------------------

def test_sample_is_what_make_sample_writes_and_learnable(tmp_path):
    spec = importlib.util.spec_from_file_location("make_sample", os.path.join(SAMPLE, "make_sample.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(str(tmp_path))
    for name in ("train.json", "dev.json"):
        assert (tmp_path / name).read_bytes() == open(os.path.join(SAMPLE, name), "rb").read()
    train, dev = sample_records(TRAIN), sample_records(DEV)
    assert (len(train), len(dev)) == (64, 16)
    for r in train + dev:                                                   # every keyword value is in the summary
        values = [kv.split("#")[1] for kv in r["content"].split("*")]
        assert r["content"].startswith("类型#") and all(v in r["summary"] for v in values)
    assert len({r["content"] for r in dev} - {r["content"] for r in train}) >= 15   # dev is (nearly) all unseen
