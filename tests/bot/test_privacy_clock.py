from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from bot.clock import EventTimeClock, ManualClock
from bot.privacy import ViewerHasher, load_or_create_salt


def test_salt_created_once_with_0600(tmp_path: Path) -> None:
    s1 = load_or_create_salt(tmp_path)
    s2 = load_or_create_salt(tmp_path)
    assert s1 == s2 and len(s1) == 32
    assert stat.S_IMODE(os.stat(tmp_path / "salt").st_mode) == 0o600


def test_hash_is_stable_salted_and_16_hex() -> None:
    h1 = ViewerHasher(b"a" * 32)
    h2 = ViewerHasher(b"b" * 32)
    a = h1("douyin", "12345")
    assert a == h1("douyin", 12345) and len(a or "") == 16
    assert a != h2("douyin", "12345")
    assert a != h1("bilibili", "12345")
    assert h1("douyin", None) is None and h1("douyin", "") is None
    assert "12345" not in (a or "")


async def test_manual_clock_wakes_sleepers_and_refuses_going_back() -> None:
    clock = ManualClock(1000)
    woke: list[int] = []

    async def sleeper() -> None:
        await clock.sleep(2)
        woke.append(clock.now_ms())

    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    clock.advance(1)
    await asyncio.sleep(0)
    assert woke == []
    clock.advance(1.5)
    await task
    assert woke == [3500]
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_event_time_clock_never_goes_back() -> None:
    c = EventTimeClock()
    c.observe(5000)
    c.observe(3000)
    assert c.now_ms() == 5000
