"""`livebot bench --scenario decode`: Bilibili frame decoding throughput under its DESIGN.md key."""

from __future__ import annotations

import json

import pytest

from bot.bench import SCENARIOS
from bot.cli import main


def test_decode_scenario_reports_messages_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    assert "decode" in SCENARIOS
    assert main(["bench", "--scenario", "decode", "--comments", "240", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scenario"] == "decode" and result["messages"] == 240
    assert result["bilibili_decode_msgs_per_s"] > 0
    assert result["cpu_count"] >= 1
