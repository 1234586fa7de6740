"""`livebot alerts test` and the App's alert sink, against local robots that verify signatures."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from bot.app import App
from bot.config import load_config
from tests.fakes.robots import FakeRobot


def _config(tmp_path: Path, robots: list[tuple[str, str, str, str | None]]) -> Path:
    lines = [f'data_dir = "{tmp_path / "data"}"', "[screen]", "enabled = false", "[alerts]"]
    for name, kind, url, secret in robots:
        lines += ["[[alerts.robots]]", f'name = "{name}"', f'kind = "{kind}"', f'url = "{url}"']
        if secret:
            lines.append(f'secret = "{secret}"')
    p = tmp_path / "alerts.toml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _now() -> int:
    return time.time_ns() // 1_000_000


async def test_alerts_test_prints_each_robot_and_fails_on_bad_secret(tmp_path: Path) -> None:
    ding = FakeRobot("dingtalk", now_ms=_now, secret="SECright0secret")
    feishu = FakeRobot("feishu", now_ms=_now, secret="feishu-secret")
    async with ding, feishu:
        good = _config(tmp_path, [("ding-ops", "dingtalk", ding.url, "SECright0secret"),
                                  ("feishu-ops", "feishu", feishu.url, "feishu-secret")])
        rc, out, err = await _cli("alerts", "test", "--config", str(good))
        assert rc == 0, err
        assert "ding-ops" in out and "feishu-ops" in out and out.count("成功") == 2
        assert len(ding.requests) == 1 and len(feishu.requests) == 1

        bad = _config(tmp_path, [("ding-ops", "dingtalk", ding.url, "SECwrong")])
        rc, out, err = await _cli("alerts", "test", "--config", str(bad))
        assert rc == 1
        assert "失败" in out and "310000" in out
        assert "SECwrong" not in out + err and ding.token not in out + err


async def test_alerts_test_without_robots_is_a_clear_error(tmp_path: Path) -> None:
    rc, _, err = await _cli("alerts", "test", "--config", str(_config(tmp_path, [])))
    assert rc == 2 and "alerts.robots" in err


def test_app_sends_alerts_through_the_outbox_sink(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, [("hook", "webhook", "http://127.0.0.1:9/hooks/livebot", None)]))
    app = App(cfg)
    assert [s.name for s in app.dispatcher.sinks if s.name == "alerts"] == ["alerts"]
    app.store.close() if app.store is not None else None
