"""Classifier metrics on labelled TSV files (``text<TAB>sentiment<TAB>confusion``, header line first).

``sentiment`` is neg/neu/pos or ``-`` (unknown); ``confusion`` is 0/1 or ``-``; an optional ``intent``
column (0/1 or ``-``) scores the buying-intent signal (已拍 / 扣1 / 上车 …, `Analysis.buying_intent`), as in
``nlp/data/intent_eval.tsv``; other columns are ignored.
A file whose gold sentiment is only neg and pos (the review corpora) is scored as a binary task: the
prediction is the larger of P(neg) and P(pos). Texts go through the same `Analyzer` as live comments
(normalisation and emotes included), so the numbers describe what the pipeline does.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import ProtocolError
from nlp.analyzer import Analyzer
from nlp.classifiers import Classifier

RESULT_KEYS: tuple[str, ...] = (
    "classifier",
    "n",
    "sentiment_n",
    "sentiment_accuracy",
    "sentiment_macro_f1",
    "confusion_n",
    "confusion_precision",
    "confusion_recall",
    "confusion_f1",
    "intent_n",
    "intent_precision",
    "intent_recall",
    "intent_f1",
    "comments_per_s",
)
"""The keys of every `evaluate` result, in table order."""

_SENTIMENT_LABELS = frozenset({"neg", "neu", "pos"})
_UNKNOWN = "-"


@dataclass(frozen=True, slots=True)
class LabelledText:
    text: str
    sentiment: str | None
    confusion: bool | None
    intent: bool | None = None


def read_tsv(path: str | Path) -> list[LabelledText]:
    """Read a labelled TSV file.

    Raises:
        ProtocolError: no ``text`` column, or a label outside neg/neu/pos/- or 0/1/- (names the line).
    """
    path = Path(path)
    rows: list[LabelledText] = []
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            return rows
        header = [h.strip().lstrip("\ufeff") for h in header]
        if "text" not in header:
            raise ProtocolError(f"{path}: the header has no 'text' column: {header}", line=1)
        i_text = header.index("text")
        i_sent = header.index("sentiment") if "sentiment" in header else None
        i_conf = header.index("confusion") if "confusion" in header else None
        i_intent = header.index("intent") if "intent" in header else None
        for line, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) <= i_text:
                raise ProtocolError(f"{path}:{line}: missing text column", line=line)

            def cell(i: int | None, _row: list[str] = row) -> str:
                return _row[i].strip() if i is not None and i < len(_row) else _UNKNOWN

            sentiment = cell(i_sent)
            if sentiment != _UNKNOWN and sentiment not in _SENTIMENTS_SORTED:
                raise ProtocolError(f"{path}:{line}: sentiment {sentiment!r} is not neg/neu/pos/-", line=line)
            confusion = cell(i_conf)
            if confusion not in ("0", "1", _UNKNOWN):
                raise ProtocolError(f"{path}:{line}: confusion {confusion!r} is not 0/1/-", line=line)
            intent = cell(i_intent)
            if intent not in ("0", "1", _UNKNOWN):
                raise ProtocolError(f"{path}:{line}: intent {intent!r} is not 0/1/-", line=line)
            rows.append(
                LabelledText(
                    text=row[i_text],
                    sentiment=None if sentiment == _UNKNOWN else sentiment,
                    confusion=None if confusion == _UNKNOWN else confusion == "1",
                    intent=None if intent == _UNKNOWN else intent == "1",
                )
            )
    return rows


_SENTIMENTS_SORTED = tuple(sorted(_SENTIMENT_LABELS))


def _macro_f1(gold: Sequence[str], pred: Sequence[str]) -> float:
    labels = sorted(set(gold) | set(pred))
    f1s = []
    for label in labels:
        tp = sum(1 for g, p in zip(gold, pred, strict=True) if g == label and p == label)
        fp = sum(1 for g, p in zip(gold, pred, strict=True) if g != label and p == label)
        fn = sum(1 for g, p in zip(gold, pred, strict=True) if g == label and p != label)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f1s) / len(f1s)


def _precision_recall_f1(gold: Sequence[bool], pred: Sequence[bool]) -> tuple[float, float, float]:
    tp = sum(1 for g, p in zip(gold, pred, strict=True) if g and p)
    fp = sum(1 for g, p in zip(gold, pred, strict=True) if not g and p)
    fn = sum(1 for g, p in zip(gold, pred, strict=True) if g and not p)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def evaluate(
    path: str | Path,
    classifier: Classifier | str | Analyzer = "rules",
    *,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Score a classifier on a labelled TSV file; returns exactly the keys of `RESULT_KEYS`.

    Metrics without labels in the file are None. ``comments_per_s`` covers normalisation, classification
    and the rest of `Analyzer.analyze` (keywords off), in batches of batch_size like the pipeline.
    """
    rows = read_tsv(path)
    analyzer = classifier if isinstance(classifier, Analyzer) else Analyzer(classifier, keywords=0)
    texts = [r.text for r in rows]
    started = time.perf_counter()
    analyses = []
    for i in range(0, len(texts), batch_size):
        analyses.extend(analyzer.analyze(texts[i : i + batch_size]))
    elapsed = time.perf_counter() - started

    result: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    result["classifier"] = analyzer.classifier.name
    result["n"] = len(rows)
    result["comments_per_s"] = len(rows) / elapsed if rows and elapsed > 0 else None

    labelled = [(r.sentiment, a) for r, a in zip(rows, analyses, strict=True) if r.sentiment is not None]
    if labelled:
        gold = [g for g, _ in labelled]
        binary = set(gold) <= {"neg", "pos"}
        if binary:
            pred = ["neg" if a.sentiment_probs[0] > a.sentiment_probs[2] else "pos" for _, a in labelled]
        else:
            pred = [a.sentiment for _, a in labelled]
        result["sentiment_n"] = len(gold)
        result["sentiment_accuracy"] = sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)
        result["sentiment_macro_f1"] = _macro_f1(gold, pred)
    else:
        result["sentiment_n"] = 0

    confused = [
        (r.confusion, a.confusion) for r, a in zip(rows, analyses, strict=True) if r.confusion is not None
    ]
    if confused:
        precision, recall, f1 = _precision_recall_f1([g for g, _ in confused], [p for _, p in confused])
        result["confusion_n"] = len(confused)
        result["confusion_precision"] = precision
        result["confusion_recall"] = recall
        result["confusion_f1"] = f1
    else:
        result["confusion_n"] = 0

    intents = [
        (r.intent, a.buying_intent) for r, a in zip(rows, analyses, strict=True) if r.intent is not None
    ]
    result["intent_n"] = len(intents)
    if intents:
        precision, recall, f1 = _precision_recall_f1([g for g, _ in intents], [p for _, p in intents])
        result["intent_precision"] = precision
        result["intent_recall"] = recall
        result["intent_f1"] = f1
    return result


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key == "comments_per_s":
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(results: Sequence[dict[str, Any]], *, files: Sequence[str] | None = None) -> str:
    """A markdown table of evaluate() results, one row each.

    ``files`` adds a leading file column; without it, a ``"file"`` entry in every result is used.
    """
    if files is None and results and all("file" in r for r in results):
        files = [str(r["file"]) for r in results]
    # The intent columns only appear when some file has intent labels (most files have none).
    has_intent = any(r.get("intent_n") for r in results)
    keys = [k for k in RESULT_KEYS if has_intent or not k.startswith("intent_")]
    header = (["file"] if files is not None else []) + keys
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for i, result in enumerate(results):
        cells = ([files[i]] if files is not None else []) + [_cell(k, result.get(k)) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nlp.evaluate FILE.tsv… [--classifier NAME]…``: print a markdown table."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nlp.evaluate", description=main.__doc__)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--classifier", action="append", dest="classifiers")
    args = parser.parse_args(argv)
    results, names = [], []
    for name in args.classifiers or ["rules"]:
        analyzer = Analyzer(name, keywords=0)
        for file in args.files:
            results.append(evaluate(file, analyzer))
            names.append(Path(file).name)
    print(format_table(results, files=names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
