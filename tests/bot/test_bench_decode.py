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


def test_pipeline_scenario_benches_the_configured_default_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without --classifier the bench measures what `livebot run` would use, whatever the default is.
    from bot import bench
    from bot.config import ClassifierConfig

    seen: list[str] = []
    monkeypatch.setattr(bench, "classifier_rate", lambda name, texts, batch=128: seen.append(name) or 1.0)
    monkeypatch.setattr(bench, "_decode_rate", lambda n: 1.0)
    out = bench.pipeline_scenario(n=60, seconds=0.2)
    assert out["classifier"] == ClassifierConfig().name == seen[0]
    assert out["pipeline_comments_per_s"] > 0 and out["p99_ms"] >= out["p50_ms"] >= 0
