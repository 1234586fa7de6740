"""One Chinese name per topic (and per platform) (nlp.topics.TOPIC_LABELS) for every topic the analyzer can give
(nlp.topics.TOPICS), used the same on the host screen, in the reports, the alerts and the terminal."""

import re
from pathlib import Path

from bot import scripts
from bot.events import PLATFORM_LABELS
from bot.outputs import report
from nlp.topics import TOPIC_LABELS, TOPICS

SCREEN_JS = Path(scripts.__file__).resolve().parent / "outputs" / "screen" / "static" / "common.js"


def test_every_topic_has_one_distinct_label():
    assert set(TOPIC_LABELS) == set(TOPICS)
    assert len(set(TOPIC_LABELS.values())) == len(TOPICS)
    assert set(TOPICS) <= set(report._TOPIC_COLORS)


def test_the_screen_uses_the_same_labels():
    block = re.search(r"const TOPIC_ZH = \{(.*?)\};", SCREEN_JS.read_text(encoding="utf-8"), re.S)
    assert block is not None
    assert dict(re.findall(r'(\w+): "([^"]+)"', block.group(1))) == TOPIC_LABELS


def test_the_screen_names_platforms_as_the_alerts_do():
    block = re.search(r"const PLATFORM_ZH = \{(.*?)\};", SCREEN_JS.read_text(encoding="utf-8"), re.S)
    assert block is not None
    assert dict(re.findall(r'(\w+): "([^"]+)"', block.group(1))) == PLATFORM_LABELS


def test_run_sheets_use_the_analyzer_topics():
    assert scripts.TOPICS == TOPICS
