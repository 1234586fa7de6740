from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.outputs.store import Store
from bot.scripts import load_run_sheet

LOG = Path(__file__).resolve().parents[2] / "data" / "scenarios" / "apparel_show.jsonl"
START_MS = 1_767_268_800_000
SIZE_BURST_MS = START_MS + 120_000  # the authored log's size questions start 2 minutes in


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "livebot.toml"
    p.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[status]\nterminal = false\n[screen]\nenabled = false\n',
        encoding="utf-8",
    )
    return p


def replay(config: Path, out: Path, *extra: str) -> list[dict[str, object]]:
    args = ["replay", str(LOG), "--config", str(config), "-q", "--suggestions-out", str(out), *extra]
    assert main(args) == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_replaying_the_same_log_twice_gives_identical_suggestions(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = replay(config, tmp_path / "a.jsonl")
    summary = capsys.readouterr().out
    second = replay(config, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert first == second

    kinds = {s["kind"] for s in first}
    assert {"script_switch", "coupon", "prompt", "alert"} <= kinds
    for s in first:
        assert {"ts", "kind", "text", "reason", "confidence"} <= s.keys()
        assert START_MS <= int(str(s["ts"])) <= START_MS + 8 * 60_000  # event time, not wall time
    size = [s for s in first if s["kind"] == "script_switch" and s.get("segment") == "尺码答疑"]
    assert size and int(str(size[0]["ts"])) - SIZE_BURST_MS <= 10_000
    assert str(size[0]["text"]).startswith("切到「尺码答疑」: ")
    assert all("topic" in s for s in first if s["kind"] == "alert" and s.get("rule") == "confusion_surge")

    assert "  建议: 切换话术 " in summary and " · 发券 " in summary and " · 告警 " in summary
    assert "次/分 (目标 4, 区间 3–5)" in summary and "推广每分钟最多 " in summary
    assert f"  建议已写入 {tmp_path / 'a.jsonl'}" in summary


def test_replay_stores_suggestions_and_takes_another_run_sheet(config: Path, tmp_path: Path) -> None:
    lines = replay(config, tmp_path / "food.jsonl", "--script", "food", "--out", str(tmp_path / "run"))
    food = load_run_sheet("food").sheet
    texts = {f"互动: {p.text}" for pool in food.prompt_pools for p in pool.prompts}
    prompts = [s["text"] for s in lines if s["kind"] == "prompt"]
    assert prompts and set(prompts) <= texts
    with Store.open(tmp_path / "run" / "livebot.db") as store:
        (session,) = store.sessions()
        rows = store.suggestions(session.id)
    assert {r["id"] for r in rows} == {s["id"] for s in lines} and len(rows) == len(lines)
    assert all(r["state"] == "accepted" for r in rows)  # replay follows every suggestion


def test_replay_with_a_bad_run_sheet_fails_before_reading(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("show: {name: x, category: 服饰}\nsegments: []\n", encoding="utf-8")
    assert main(["replay", str(LOG), "--config", str(config), "-q", "--script", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: segments:" in err
