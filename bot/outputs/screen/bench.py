"""`livebot bench --scenario screen`: event → suggestion on a page, under a 1,000 comments/s load.

The room runs through the real pipeline (rules analyzer, SQLite store) at the offered rate while
`clients` websocket pages are connected to a real ScreenServer on loopback. Four times a second one of
the comments is a trigger: once the pipeline has analysed it and applied it to RoomState, a hook turns
it into a Suggestion (as an advisor evaluated on new data would) and publishes it. Measured:

- `screen_p99_ms`: trigger comment submitted → its suggestion parsed by a page, over every page;
- `state_age_p99_ms` / `state_age_max_ms`: how old a page's snapshot is just before the next one lands
  (the freshness of what the host sees; DESIGN.md asks for about 600 ms at most at 2 Hz).

The live App adds its advisor tick interval (`advisors.tick_s`) on top when it advises on the clock
rather than on new data; that interval is reported as `advisor_tick_s` for reading the result.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bot.advisors.base import Suggestion, SuggestionKind
from bot.clock import SystemClock, monotonic
from bot.events import Event, EventKind
from bot.outputs.screen.actions import RoomActions
from bot.outputs.screen.app import ScreenServer
from bot.outputs.store import Store
from bot.pipeline import Pipeline

ROOM = "bench"
TRIGGER_TEXT = "这个多少钱"
TRIGGERS_PER_S = 4


@dataclass
class _PageStats:
    latencies_ms: list[float] = field(default_factory=list)
    ages_ms: list[float] = field(default_factory=list)
    suggestions: int = 0
    snapshots: int = 0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def _page(
    http: aiohttp.ClientSession, url: str, submitted: dict[str, float], clock: SystemClock, stats: _PageStats,
    ready: asyncio.Event, warm_until: list[float],
) -> None:
    """One simulated page: parses every frame as the browser does and notes when things land."""
    last_server_ms: int | None = None
    async with http.ws_connect(url, max_msg_size=0) as ws:
        ready.set()
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            kind = data.get("type")
            if kind == "suggestion":
                sent = submitted.get(str(data.get("id")))
                if sent is not None:
                    stats.latencies_ms.append((monotonic() - sent) * 1000)
                    stats.suggestions += 1
            elif kind == "snapshot":
                now_ms = clock.now_ms()
                if last_server_ms is not None and monotonic() >= warm_until[0]:
                    stats.ages_ms.append(now_ms - last_server_ms)
                last_server_ms = int(data["server_ms"])
                stats.snapshots += 1


async def _run(
    texts: list[str], *, rate: int, seconds: float, clients: int, store_path: Path
) -> dict[str, Any]:
    from nlp.analyzer import Analyzer

    clock = SystemClock()
    analyzer = Analyzer("rules")
    analyzer.analyze(texts[:64])  # warm-up: lexicons and jieba load before the clock starts
    submitted: dict[str, float] = {}
    with Store.open(store_path) as store:
        pipe = Pipeline(analyzer, clock=clock, store=store)
        state = pipe.state(ROOM)
        server = ScreenServer(
            host="127.0.0.1", port=0, clock=clock,
            snapshot_provider=lambda: {room: st.snapshot(clock.now_ms()) for room, st in pipe.states.items()},
            action_handler=RoomActions(pipe.states, clock=clock, store=store, sessions=pipe.sessions),
        )

        def on_batch(batch: Any, analyses: Any) -> None:
            # The advisor-on-new-data stand-in: a trigger comment, once analysed, becomes a suggestion.
            for ev in batch:
                if ev.msg_id is not None and ev.msg_id.startswith("trigger-"):
                    now = clock.now_ms()
                    s = Suggestion(
                        id=ev.msg_id, room=ROOM, kind=SuggestionKind.PROMPT, created_ts=now,
                        expires_ts=now + 60_000, text="扣1 想要的姐妹扣1", reason="bench trigger",
                    )
                    state.record_suggestion(s)
                    server.publish_suggestion(ROOM, s.to_json())

        pipe.hooks.append(on_batch)
        task = asyncio.create_task(pipe.run())
        pages = [_PageStats() for _ in range(clients)]
        warm_until = [float("inf")]
        async with server, aiohttp.ClientSession() as http:
            readies = [asyncio.Event() for _ in range(clients)]
            readers = [
                asyncio.create_task(_page(http, server.url + "ws", submitted, clock, st, ready, warm_until))
                for st, ready in zip(pages, readies, strict=True)
            ]
            await asyncio.gather(*(r.wait() for r in readies))
            tick = 0.01
            per_tick = max(1, round(rate * tick))
            trigger_every = max(1, round(rate / TRIGGERS_PER_S))
            t0 = monotonic()
            warm_until[0] = t0 + 1.0
            i = 0
            triggers = 0
            while monotonic() - t0 < seconds:
                target = t0 + (i // per_tick + 1) * tick
                now = clock.now_ms()
                for _ in range(per_tick):
                    if i % trigger_every == trigger_every - 1 and monotonic() >= warm_until[0]:
                        key = f"trigger-{triggers}"
                        triggers += 1
                        submitted[key] = monotonic()
                        ev = Event("bench", ROOM, EventKind.CHAT, now, now, msg_id=key, text=TRIGGER_TEXT)
                    else:
                        ev = Event("bench", ROOM, EventKind.CHAT, now, now, text=texts[i % len(texts)],
                                   user_id=f"{i % 5000:016x}")
                    await pipe.submit(ev)
                    i += 1
                delay = target - monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elapsed = monotonic() - t0
            await asyncio.sleep(1.0)  # let the last triggers and a couple of snapshots land
            for r in readers:
                r.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            hub_stats = server.hub.stats
        await pipe.stop()
        await task
        pipe.close()
    latencies = [x for p in pages for x in p.latencies_ms]
    ages = [x for p in pages for x in p.ages_ms]
    expected = triggers * clients
    return {
        "scenario": "screen",
        "clients": clients,
        "offered_rate": rate,
        "achieved_rate": round(i / elapsed, 1),
        "seconds": seconds,
        "triggers": triggers,
        "suggestions_received": len(latencies),
        "suggestions_missing": expected - len(latencies),
        "screen_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "screen_p99_ms": round(_percentile(latencies, 0.99), 2) if latencies else None,
        "screen_max_ms": round(max(latencies), 2) if latencies else None,
        "state_age_p99_ms": round(_percentile(ages, 0.99), 1) if ages else None,
        "state_age_max_ms": round(max(ages), 1) if ages else None,
        "snapshots_dropped": hub_stats.snapshots_dropped,
        "pipeline_shed": pipe.stats.shed,
        "advisor_tick_s": _advisor_tick_s(),
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        "cpu_count": os.cpu_count(),
    }


def _advisor_tick_s() -> float:
    from bot.config import Config

    return Config().advisors.tick_s


def screen_scenario(
    *, rate: int = 1000, seconds: float = 10.0, clients: int = 50, n: int = 20000, **_: Any
) -> dict[str, Any]:
    """Run the scenario (see the module docstring); returns the bench JSON object."""
    from bot.bench import bench_comments

    texts = bench_comments(min(n, 20000))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        return asyncio.run(_run(texts, rate=rate, seconds=seconds, clients=clients, store_path=db))
