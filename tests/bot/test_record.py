"""`livebot record` end to end against the fake servers, then `livebot replay` on what it wrote."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.clock import SystemClock
from bot.errors import LivebotError
from bot.events import Event, EventKind
from bot.privacy import ViewerHasher
from bot.record import JsonlRecorder, record
from bot.sources.generic_ws import GenericWsClient
from tests.fakes import bilibili as fake
from tests.fakes.barragegrab import FakeBarrageGrab
from tests.fakes.generic_push import GenericPushServer, until

START_TIMEOUT_S = 60.0
"""Bound for the recorder process to start and connect (interpreter start-up on a busy machine)."""


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _config_file(tmp_path: Path) -> Path:
    cfg = tmp_path / "livebot.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n[advisors]\nenabled = false\n', encoding="utf-8")
    return cfg


async def _push_bilibili(server: fake.FakeBilibili) -> None:
    await server.wait_authed(timeout=START_TIMEOUT_S)
    comments = (fake.danmu("有XL码吗", id_str="r-1"), fake.danmu("主播好", id_str="r-2"))
    await server.push(fake.zlib_frame(*comments))
    await server.push(fake.brotli_frame(fake.send_gift(tid="g-1", num=2), fake.watched_change(1234)))
    await server.push(fake.plain_frame(fake.danmu("有XL码吗", id_str="r-1")))  # a replayed duplicate


async def _push_douyin(server: FakeBarrageGrab) -> None:
    await asyncio.wait_for(server.wait_clients(1), START_TIMEOUT_S)
    for type_ in (1, 2, 5, 6):
        await server.push_example(type_)
    await server.push_example(1, MsgId=7400000000000000999, Content="能便宜点吗")


async def _push_generic(server: GenericPushServer) -> None:
    await asyncio.wait_for(server.wait_clients(1), START_TIMEOUT_S)
    await server.push([
        {"platform": "kuaishou", "room": "3x9demo", "kind": "chat", "ts": 1767225600123, "id": "m-1",
         "user": {"id": "u1001", "name": "小北"}, "text": "这个有XL码吗"},
        {"platform": "kuaishou", "room": "3x9demo", "kind": "stats", "ts": 1767225601000,
         "stats": {"online": 842}},
    ])
    await server.push_event(platform="kuaishou", room="3x9demo", kind="like", ts=1767225602000,
                            user={"id": "u1002"}, count=15)


Case = tuple[Callable[[], Any], Callable[[Any], list[str]], Callable[[Any], Awaitable[None]], int]
CASES: dict[str, Case] = {
    # platform: (fake server, record options, what the fake pushes, chat lines expected)
    "bilibili": (
        fake.FakeBilibili,
        lambda s: ["--room", str(s.short_id), "--api-base", s.base_url, "--ws-url", s.ws_url],
        _push_bilibili,
        2,
    ),
    "douyin": (FakeBarrageGrab, lambda s: ["--room", "123456789012", "--ws-url", s.url], _push_douyin, 2),
    "generic": (GenericPushServer, lambda s: ["--room", "ks-demo", "--ws-url", s.url], _push_generic, 1),
}


@pytest.mark.parametrize("platform", sorted(CASES))
async def test_record_then_replay_gives_the_same_events(
    platform: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_server, options, push, chats = CASES[platform]
    out = tmp_path / "logs" / f"{platform}.jsonl"
    cfg = _config_file(tmp_path)
    async with make_server() as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "record", "--platform", platform, *options(server),
            "--out", str(out), "--config", str(cfg),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            await push(server)
            await until(lambda: sum(r["kind"] == "chat" for r in _lines(out)) >= chats, timeout=10)
            proc.send_signal(signal.SIGINT)  # Ctrl+C
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    lines = _lines(out)
    kinds = [r["kind"] for r in lines]
    assert kinds.count("chat") == chats
    assert len({r.get("id") for r in lines if r["kind"] == "chat"}) == chats  # no duplicate after a replay
    assert all("received_ts" in r and r["room"] for r in lines)
    assert all(len(r["user"]["id"]) == 16 for r in lines if "user" in r)  # salted hashes, never raw ids
    assert "小北" not in out.read_text(encoding="utf-8")  # names dropped (privacy.store_names = false)
    summary = stdout.decode()
    assert f"已录制 {len(lines)} 条事件 → {out}" in summary
    assert f"chat {chats}" in summary
    assert b"Traceback" not in stderr

    capsys.readouterr()
    code = await asyncio.to_thread(
        main, ["replay", str(out), "--config", str(cfg), "--out", str(tmp_path / "replayed"), "-q"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"读取 {len(lines)} 行, 事件 {len(lines)}, 跳过 0" in printed
    assert f"弹幕 {chats} 条" in printed


async def test_lines_are_flushed_per_burst_and_survive_a_stop(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    stop = asyncio.Event()
    async with GenericPushServer() as server:
        client = GenericWsClient(server.url, hasher=ViewerHasher.for_tests(), room="r1", clock=SystemClock())
        task = asyncio.create_task(record(client, out, stop=stop))
        await asyncio.wait_for(server.wait_clients(1), 5)
        await server.push([
            {"platform": "custom", "room": "x", "kind": "chat", "ts": 1, "user": {"id": str(i)},
             "text": f"第{i}条"}
            for i in range(50)
        ])
        # Readable from disk while recording continues: flushed once the burst was written.
        await until(lambda: len(_lines(out)) == 51)  # source_up + 50 comments
        assert task.done() is False
        stop.set()
        result = await asyncio.wait_for(task, 10)
    assert result.total == 51 and result.counts == {"system": 1, "chat": 50}
    assert result.status.state.value == "stopped"
    assert [r["text"] for r in _lines(out)[1:]] == [f"第{i}条" for i in range(50)]


async def test_existing_log_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    out.write_text('{"kept":true}\n', encoding="utf-8")
    with pytest.raises(LivebotError, match="already exists; choose another file or pass --append"):
        JsonlRecorder(out).__enter__()
    ev = Event("custom", "r", EventKind.CHAT, 1, 2, text="追加")
    with JsonlRecorder(out, append=True) as rec:
        await rec(ev)
    assert out.read_text(encoding="utf-8").splitlines() == ['{"kept":true}', ev.to_line()]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--platform", "bilibili", "--out", "x.jsonl"], "needs --room"),
        (["--platform", "bilibili", "--room", "0", "--out", "x.jsonl"], "positive room number"),
        (["--platform", "generic", "--out", "x.jsonl"], "needs --ws-url"),
        (["--platform", "douyin", "--api-base", "http://x", "--out", "x.jsonl"], "bilibili only"),
        (["--platform", "douyin", "--ws-url", "http://x", "--out", "x.jsonl"], "ws:// or wss://"),
        (["--platform", "bilibili", "--room", "5", "--cookie-file", "nope", "--out", "x.jsonl"],
         "--cookie-file: cookie file not found"),
    ],
)
def test_record_option_errors(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["record", *argv, "--config", str(_config_file(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("livebot: 错误: ") and message in err
    assert not (tmp_path / "x.jsonl").exists()
