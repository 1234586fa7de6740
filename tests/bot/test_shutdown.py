"""Graceful shutdown of `livebot run` on SIGTERM, and resuming the session after a restart.

The service runs in a subprocess with a temporary config (simulator room, screen on a free port). The
test waits for stored events (polling the SQLite file, a condition, not a timing), sends SIGTERM and
checks: exit code 0, every event the pipeline took in is stored (received − duplicates), the session
is ended; a restart with `--session ID` reads the stored events back into the room's state and appends
to the same session.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import resume_sessions
from bot.config import parse_config
from bot.errors import LivebotError
from bot.events import Event, EventKind
from bot.outputs.store import Store
from tests.bot.redis_server import redis_server

CONFIG = """
data_dir = "{data}"
[status]
terminal = false
[screen]
port = 0
[[rooms]]
name = "shop"
  [[rooms.sources]]
  kind = "simulator"
  seed = 3
  rate = 200.0
"""

STOPPED = re.compile(r"已停止: 收到 (\d+) 条事件, 分析 (\d+), 存储 (\d+), 重复丢弃 (\d+)")


def _events(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # schema not created yet


def _run_until_sigterm(config: Path, db: Path, *extra: str, at_least: int) -> tuple[int, str]:
    """Start `livebot run`, wait until `at_least` events are stored, SIGTERM it; (exit code, stderr)."""
    cmd = [sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main())",
           "run", "--config", str(config), "--duration", "300", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while _events(db) < at_least:
            if proc.poll() is not None:
                pytest.fail(f"livebot run exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("livebot run stored no events within 90 s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def _session(db: Path) -> list[tuple[str, int | None, dict[str, object], int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT s.id, s.ended_ts, s.meta, (SELECT COUNT(*) FROM events e WHERE e.session_id = s.id)"
            " FROM sessions s ORDER BY s.started_ts"
        ).fetchall()
    return [(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]


@pytest.fixture(params=["local", "redis"])
def bus(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    if request.param == "local":
        yield []
        return
    pytest.importorskip("redis")
    with redis_server() as url:
        yield ["--bus", url]


@pytest.mark.slow
def test_sigterm_drains_and_a_restart_resumes_the_session(tmp_path: Path, bus: list[str]) -> None:
    data = tmp_path / "data"
    config = tmp_path / "livebot.toml"
    config.write_text(CONFIG.format(data=data.as_posix()), encoding="utf-8")
    db = data / "livebot.db"

    code, err = _run_until_sigterm(config, db, *bus, at_least=300)
    assert code == 0, err[-2000:]
    received, _analyzed, stored, duplicates = map(int, STOPPED.search(err).groups())  # type: ignore[union-attr]
    [(sid, ended, meta, count)] = _session(db)
    assert count == stored == received - duplicates  # everything the pipeline took in is on disk
    assert ended is not None
    assert meta["pipeline"]["stored"] == stored  # type: ignore[index]
    assert sid.endswith("-shop")

    code, err = _run_until_sigterm(config, db, *bus, "--session", sid, at_least=count + 300)
    assert code == 0, err[-2000:]
    assert f"继续会话 {sid} (已恢复 {count} 条事件)" in err  # the room's state continues, not from zero
    received2, _, stored2, duplicates2 = map(int, STOPPED.search(err).groups())  # type: ignore[union-attr]
    [(sid2, ended2, _meta, count2)] = _session(db)  # still one session: the restart appended to it
    assert sid2 == sid and ended2 is not None
    assert count2 == count + stored2 == count + received2 - duplicates2
    if bus:
        # Everything published was read, stored and acknowledged; nothing is left behind in Redis.
        import redis

        client = redis.Redis.from_url(bus[1])
        try:
            assert client.xlen("livebot:events:shop") == count2
            assert client.xpending("livebot:events:shop", "livebot")["pending"] == 0
            assert not client.exists("livebot:owner:shop")
        finally:
            client.close()


def test_resume_sessions_maps_ids_to_rooms(tmp_path: Path) -> None:
    cfg = parse_config({
        "data_dir": str(tmp_path),
        "rooms": [{"name": "a"}, {"name": "shop-a"}],
    })
    assert resume_sessions(cfg, ["20260101-200000-shop-a", "20260101-200000-a"]) == {
        "shop-a": "20260101-200000-shop-a", "a": "20260101-200000-a",
    }
    with pytest.raises(LivebotError, match="names no configured room"):
        resume_sessions(cfg, ["20260101-200000-other"])
    with pytest.raises(LivebotError, match="two --session ids for room a"):
        resume_sessions(cfg, ["x-a", "y-a"])
    assert resume_sessions(cfg, [], latest=True) == {}  # no store yet: fresh sessions
    with Store.open(cfg.store_path) as store:
        for ts in (1_767_268_800_000, 1_767_272_400_000):
            sid = store.start_session("a", ts)
            store.write_batch(sid, [Event("t", "a", EventKind.CHAT, ts, ts, text="hi")], [None])
    assert resume_sessions(cfg, [], latest=True) == {"a": "20260101-210000-a"}
    one_room = parse_config({"data_dir": str(tmp_path)})
    assert resume_sessions(one_room, ["any-id"]) == {"demo": "any-id"}


async def test_a_resumed_session_restores_the_room_state_and_dedupes_replayed_messages(tmp_path: Path) -> None:
    """The room's windows, totals and questions continue from the stored session, so the screen and the
    advisors don't start from zero after a restart; a source replaying its last messages adds nothing."""
    import io

    from bot.app import App
    from bot.clock import ManualClock
    from nlp.analyzer import Analyzer

    t0 = 1_767_268_800_000
    cfg = parse_config({"data_dir": str(tmp_path), "status": {"terminal": False}, "screen": {"enabled": False},
                        "rooms": [{"name": "shop"}]})
    texts = ["这个多少钱", "160斤穿什么码", "好看爱了", "什么时候发货", "主播好美", "太贵了吧"]
    events = [Event("douyin", "shop", EventKind.CHAT, t0 + i * 1000, t0 + i * 1000, msg_id=f"m{i}",
                    user_id=f"u{i % 4}", text=t) for i, t in enumerate(texts)]
    events.append(Event("douyin", "shop", EventKind.LIKE, t0 + 7000, t0 + 7000, msg_id="l1", count=5))
    analyses = Analyzer("rules").analyze(texts)
    from bot.advisors.base import SuggestionKind
    from bot.advisors.common import make

    left = make(room="shop", kind=SuggestionKind.PROMPT, now=t0 + 5000, ttl_s=60, text="扣1", reason="test",
                key="p", review_below=0.85)
    with Store.open(cfg.store_path) as store:
        sid = store.start_session("shop", t0)
        store.write_batch(sid, events, [*analyses, None])
        store.save_suggestion(sid, left)  # pending when the old process stopped

    app = App(cfg, clock=ManualClock(t0 + 10_000), out=io.StringIO())
    try:
        assert app.restore_session("shop", sid) == len(events)
        assert [s["state"] for s in app.store.suggestions(sid)] == ["expired"]  # it lapsed with its process
        assert app.restore_session("shop", "20260101-000000-shop") == 0  # a new id: nothing to read
        st = app.pipeline.state("shop")
        assert (st.totals.comments, st.totals.analyzed, st.totals.likes) == (6, 6, 5)
        assert st.totals.confused == sum(a.confusion for a in analyses) >= 2
        assert len(st.totals.viewers) == 4
        assert st.window(60, t0 + 10_000).comments == 6
        assert {q.text for q in st.question_list(60, t0 + 10_000)} >= {"160斤穿什么码", "什么时候发货"}
        # A reconnecting source that sends its last messages again: counted as duplicates, not stored twice.
        await app.pipeline.submit(events[-2])
        assert app.pipeline.stats.duplicates == 1
    finally:
        if app.store is not None:
            app.store.close()
