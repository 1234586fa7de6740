"""nlp.wide: the linear n-gram comparison model — stable features, deterministic training, a real report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from nlp.train import NO_LABEL, Example, TrainSettings, train  # noqa: E402
from nlp.wide import WideSettings, compare, format_table, main, ngram_ids, train_wide  # noqa: E402

SMALL = WideSettings(buckets_log2=12, epochs=3, lr=0.1, batch=8)


def test_feature_ids_are_stable_and_cover_chars_words_and_bigrams() -> None:
    chars_only = WideSettings(buckets_log2=20, char_orders=(1,), words=False)
    # "^", "好", "$": one id per padded character, the same in every process (crc32, not hash()).
    assert len(ngram_ids("好", chars_only)) == 3
    assert ngram_ids("好", chars_only) == ngram_ids("好", chars_only)
    full = WideSettings(buckets_log2=20)
    ids = ngram_ids("这个多少钱", full)
    # 7 padded chars → 7+6+5+4 char n-grams; words ^ 这个 多少 钱 $ → 5 words + 4 bigrams (jieba's cut).
    assert len(ids) == 22 + 5 + 4
    assert all(0 <= i < 1 << 20 for i in ids)
    assert ngram_ids("", full) == ngram_ids("", full) and len(ngram_ids("", full)) >= 1


def _examples() -> tuple[list[Example], list[Example]]:
    pos = ["好吃", "真好吃", "很好吃啊", "好吃好吃", "太好吃了", "好吃到哭"]
    neg = ["难吃", "真难吃", "很难吃啊", "难吃难吃", "太难吃了", "难吃到哭"]
    rows = [Example(t, 2, True, NO_LABEL, "waimai") for t in pos] + [
        Example(t, 0, True, NO_LABEL, "waimai") for t in neg
    ]
    live = [Example("多少钱", 1, False, 1, "livechat"), Example("来了", 1, False, 0, "livechat")]
    train_set = rows[1:6] + rows[7:12] + live
    val_set = [rows[0], rows[6], *live]
    return train_set, val_set


def test_training_is_deterministic_and_learns_a_separable_set() -> None:
    train_set, val_set = _examples()
    a, best_a, hist_a = train_wide(train_set, val_set, TrainSettings(), SMALL, seed=5)
    b, best_b, _ = train_wide(train_set, val_set, TrainSettings(), SMALL, seed=5)
    assert torch.equal(a.table.weight, b.table.weight) and best_a == best_b
    assert len(hist_a) == 3 and 1 <= best_a <= 3
    logits = a.logits(["好吃", "难吃"])
    assert logits[0, 2] > logits[0, 0] and logits[1, 0] > logits[1, 2]
    assert hist_a[best_a - 1]["waimai_acc"] == 1.0


def test_compare_reports_every_row_on_the_models_own_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = TrainSettings(
        layers=1, hidden=32, heads=2, intermediate=64, max_chars=48, ngram_buckets=2048,
        mlm_epochs=1.0, epochs=1, tokens_per_batch=512, max_batch=16, embed_init="",
    )  # fmt: skip
    out = train(tmp_path / "m", seed=3, subset=64, settings=tiny, threads=1).out_dir
    report = compare(out, None, SMALL, mixes=(1.0,))
    rows = report["validation"]
    assert set(rows) == {"transformer", "linear", "transformer + linear x1"}
    for kinds in rows.values():
        assert set(kinds) == {"raw", "with_rules"}
        assert 0.0 <= kinds["raw"]["score"] <= 1.0
    # The transformer's rows are what training recorded for the same split and weights: raw logits, and
    # calibrated once (not twice: the model's forward calibrates) with the rules fused.
    meta = json.loads((out / "training.json").read_text())
    assert meta["logit_temperature"] != [1.0, 1.0] or any(meta["logit_bias"])
    for kind, key in (("raw", "validation"), ("with_rules", "validation_with_rules")):
        for name, value in meta[key].items():
            assert rows["transformer"][kind][name] == pytest.approx(value, abs=1e-6), (kind, name)
    assert "| transformer, raw |" in format_table(report)
    # Wrong data for this model: one clear line, exit code 2.
    assert main(["--model", str(out), "--data", str(tmp_path)]) == 2
    assert "same data" in capsys.readouterr().err
