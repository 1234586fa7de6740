from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.errors import ProtocolError
from nlp.classifiers.base import Prediction
from nlp.evaluate import RESULT_KEYS, evaluate, format_table, read_tsv

SHARED = Path(__file__).resolve().parents[2] / "../shared"
LIVECHAT_DEV = SHARED / "data/eval/livechat_dev.tsv"

_LABEL_PROBS = {"neg": (0.7, 0.2, 0.1), "neu": (0.1, 0.8, 0.1), "pos": (0.1, 0.2, 0.7)}


class _Table:
    """Returns a prediction looked up by text, so the metrics can be computed by hand."""

    name = "table"

    def __init__(self, table: dict[str, tuple[str, bool]]) -> None:
        self.table = table

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        out = []
        for t in texts:
            sentiment, confused = self.table[t]
            out.append(Prediction(_LABEL_PROBS[sentiment], 0.9 if confused else 0.1))
        return out


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_three_way_metrics_by_hand(tmp_path):
    path = _write(
        tmp_path / "tiny.tsv",
        [
            "text\tsentiment\tconfusion\tnote",
            "甲\tpos\t0\tx",
            "乙\tneg\t1\tx",
            "丙\tneu\t1\tx",
            "丁\tneu\t0\tx",
            "戊\t-\t1\tx",
            "己\tpos\t-\tx",
        ],
    )
    table = {
        "甲": ("pos", False),  # sentiment right, confusion right (TN)
        "乙": ("neg", True),  # right, TP
        "丙": ("pos", False),  # wrong, FN
        "丁": ("neu", True),  # right, FP
        "戊": ("neu", True),  # (no sentiment label), TP
        "己": ("neu", False),  # wrong, (no confusion label)
    }
    result = evaluate(path, _Table(table))
    assert list(result) == list(RESULT_KEYS)
    assert result["classifier"] == "table"
    assert result["n"] == 6
    assert result["sentiment_n"] == 5
    assert result["sentiment_accuracy"] == pytest.approx(3 / 5)
    # neg F1 = 1; neu: TP 1 FP 1 FN 1 -> 0.5; pos: TP 1 FP 1 FN 1 -> 0.5
    assert result["sentiment_macro_f1"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert result["confusion_n"] == 5
    assert result["confusion_precision"] == pytest.approx(2 / 3)
    assert result["confusion_recall"] == pytest.approx(2 / 3)
    assert result["confusion_f1"] == pytest.approx(2 / 3)
    assert result["comments_per_s"] > 0


def test_binary_files_use_the_larger_polar_probability(tmp_path):
    path = _write(
        tmp_path / "reviews.tsv", ["text\tsentiment\tconfusion", "好\tpos\t-", "差\tneg\t-", "行\tpos\t-"]
    )

    class _Neutralish:
        name = "neutralish"

        def predict(self, texts):
            probs = {"好": (0.1, 0.6, 0.3), "差": (0.3, 0.6, 0.1), "行": (0.35, 0.6, 0.05)}
            return [Prediction(probs[t], 0.0) for t in texts]

    result = evaluate(path, _Neutralish())
    # Predictions pos, neg, neg (never neu): accuracy 2/3; pos F1 = 2/3, neg F1 = 2/3.
    assert result["sentiment_accuracy"] == pytest.approx(2 / 3)
    assert result["sentiment_macro_f1"] == pytest.approx(2 / 3)
    assert result["confusion_n"] == 0
    assert result["confusion_f1"] is None and result["confusion_precision"] is None


def test_bad_labels_name_the_line(tmp_path):
    path = _write(tmp_path / "bad.tsv", ["text\tsentiment\tconfusion", "好\tpos\t0", "差\tnegative\t0"])
    with pytest.raises(ProtocolError, match=r"bad.tsv:3: sentiment 'negative'"):
        read_tsv(path)
    path = _write(tmp_path / "nocol.tsv", ["comment\tsentiment", "好\tpos"])
    with pytest.raises(ProtocolError, match="no 'text' column"):
        read_tsv(path)


def test_format_table_is_markdown(tmp_path):
    path = _write(tmp_path / "t.tsv", ["text\tsentiment\tconfusion", "多少钱\tneu\t1"])
    table = format_table([evaluate(path, "rules")], files=["t.tsv"])
    header, rule, row = table.splitlines()
    assert header.startswith("| file | classifier | n |")
    assert rule.startswith("|---|")
    assert row.startswith("| t.tsv | rules | 1 | 1 | 1.000 |")


@pytest.mark.skipif(not LIVECHAT_DEV.exists(), reason="shared eval data not present")
def test_rules_beat_all_neutral_on_livechat_dev():
    result = evaluate(LIVECHAT_DEV, "rules")
    gold = [r.sentiment for r in read_tsv(LIVECHAT_DEV) if r.sentiment]
    neu = gold.count("neu")
    # All-neutral baseline: only neu scores, F1 = 2*neu / (2*neu + (len - neu)); macro over 3 labels.
    all_neutral_macro = 2 * neu / (2 * neu + len(gold) - neu) / 3
    assert result["sentiment_macro_f1"] > all_neutral_macro
    assert result["sentiment_macro_f1"] > 0.5
    assert result["confusion_f1"] >= 0.6


def test_format_table_takes_file_names_from_results(tmp_path):
    path = _write(tmp_path / "t.tsv", ["text\tsentiment\tconfusion", "多少钱\tneu\t1"])
    result = evaluate(path, "rules")
    result["file"] = "t.tsv"
    assert format_table([result]).splitlines()[2].startswith("| t.tsv | rules |")
