"""Every place that names topics covers every topic the analyzer can give (one list: nlp.topics.TOPICS)."""

import re
from pathlib import Path

import pytest

from bot import analytics_trend, scripts
from bot.advisors import common
from bot.outputs import report, report_data
from bot.outputs.alerts import robots
from nlp.topics import TOPICS

SCREEN_JS = Path(scripts.__file__).resolve().parent / "outputs" / "screen" / "static" / "common.js"


@pytest.mark.parametrize(
    "labels",
    [
        common.TOPIC_LABELS,
        report_data.TOPIC_LABELS,
        robots.TOPIC_NAMES,
        analytics_trend._TOPIC_ZH,
        report._TOPIC_COLORS,
    ],
    ids=["advisors", "report", "alerts", "trend", "report colours"],
)
def test_every_label_map_covers_every_topic(labels):
    assert set(TOPICS) <= set(labels)


def test_the_screen_names_every_topic():
    block = re.search(r"const TOPIC_ZH = \{(.*?)\};", SCREEN_JS.read_text(encoding="utf-8"), re.S)
    assert block is not None
    keys = set(re.findall(r"(\w+):", block.group(1)))
    assert set(TOPICS) <= keys


def test_run_sheets_use_the_analyzer_topics():
    assert scripts.TOPICS == TOPICS
