"""`livebot bench --scenario load|soak`: the whole live service under a steady many-room load.

Both scenarios run the real `App` (pipeline, analyzer from the config, SQLite store, advisors, the
host screen with connected pages) with one steady source per room in place of the configured ones.
A steady source plays the simulator's room (its comments, viewers, gifts and likes) re-timed to an
exact comment rate, so the offered load is what the scenario says, not the simulator's bursts.

- `load`: 10 rooms × 300 comments/s for 60 s. Reports throughput, p50/p99 event→RoomState latency,
  peak RSS, CPU use and stored-event loss (rows in SQLite vs events submitted minus duplicates; must be 0).
- `soak --minutes N` (default 30): 3 rooms × 100 comments/s. Samples RSS every `sample_s` and reports
  its drift after the warm-up; it must stay within ±10%. The warm-up is 5 minutes (half of a shorter run):
  the bounded structures fill up in that time (RoomState's 5-minute window ring with its per-second viewer
  sets; the pipeline's duplicate filter of 50,000 message ids takes under 3 minutes at 300 events/s), so
  growth after it is what could leak.

Figures are measured, not asserted: they depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from bot.bench import _scenario
from bot.clock import Clock, SystemClock, monotonic
from bot.config import Config, parse_config
from bot.events import Event, EventKind
from bot.privacy import ViewerHasher
from bot.sources.base import Emit, SourceState, SourceStatus

if TYPE_CHECKING:
    from bot.app import App

TICK_S = 0.01
"""Steady sources emit what fell due every 10 ms."""


class SteadySource:
    """The simulator's room at an exact comment rate (other kinds come along as the simulator mixes them).

    The room's events are generated before the run (`pool` of them, a few MB) and replayed in a loop with
    fresh ids and times, so the benchmark spends its CPU on the service, not on simulating the room.
    """

    def __init__(
        self, room: str, rate: float, *, clock: Clock, hasher: ViewerHasher, seed: int, pool: int = 3000
    ) -> None:
        from bot.sources.simulator import Simulator

        self.rate = rate
        self._clock = clock
        sim = Simulator(seed=seed, rate=min(rate, 2000.0), room=room, start_ts=clock.now_ms())
        stream = sim.stream(start_ts=clock.now_ms(), hasher=hasher)
        # No system events: a live_start repeated every loop would mean nothing.
        self._pool = [ev for ev, _ in itertools.islice(stream, pool) if ev.kind is not EventKind.SYSTEM]
        self.status = SourceStatus(name="steady", platform="simulator", room=room)
        self.submitted = 0
        """Events handed to the pipeline."""
        self.comments = 0
        self._stop = asyncio.Event()

    def _next(self, now: int) -> Event:
        n = self.submitted
        ev = self._pool[n % len(self._pool)]
        # Direct construction: dataclasses.replace() costs several times more per event.
        return Event(
            ev.platform, ev.room, ev.kind, now, now, f"{ev.msg_id}-{n // len(self._pool)}", ev.user_id,
            ev.user_name, ev.text, ev.count, ev.value, ev.gift_name, ev.stats, ev.event,
        )

    async def run(self, emit: Emit) -> None:
        self.status.state = SourceState.CONNECTED
        t0 = monotonic()
        while not self._stop.is_set():
            due = int((monotonic() - t0) * self.rate)
            now = self._clock.now_ms()
            while self.comments < due and not self._stop.is_set():
                ev = self._next(now)
                await emit(ev)
                self.submitted += 1
                if ev.kind is EventKind.CHAT:
                    self.comments += 1
            self.status.messages = self.submitted
            self.status.last_message_ms = now
            try:
                async with asyncio.timeout(TICK_S):
                    await self._stop.wait()
            except TimeoutError:
                pass
        self.status.state = SourceState.STOPPED

    def stop(self) -> None:
        self._stop.set()


@dataclass
class _Samples:
    t_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)


@dataclass
class _Latency:
    """Event → RoomState latency histogram in whole ms (bounded memory, however long the run)."""

    since: float
    counts: Counter[int] = field(default_factory=Counter)

    def hook(self, clock: Clock) -> Callable[[Sequence[Event], Sequence[Any]], None]:
        def on_batch(batch: Sequence[Event], _analyses: Sequence[Any]) -> None:
            if monotonic() < self.since:
                return
            now = clock.now_ms()
            for ev in batch:
                self.counts[min(max(0, now - ev.received_ts), 600_000)] += 1

        return on_batch

    def percentile(self, q: float) -> float | None:
        total = sum(self.counts.values())
        if not total:
            return None
        rank = min(total - 1, int(total * q))
        seen = 0
        for ms in sorted(self.counts):
            seen += self.counts[ms]
            if seen > rank:
                return float(ms)
        return float(max(self.counts))


def service_config(data_dir: Path, *, rooms: int, rate: float, classifier: str | None) -> Config:
    """The shipped defaults with `rooms` simulator rooms, the screen on a free port and no status lines."""
    def sim(i: int) -> dict[str, Any]:
        return {"kind": "simulator", "seed": i + 1, "rate": min(rate, 2000.0)}

    data: dict[str, Any] = {
        "data_dir": str(data_dir),
        "status": {"terminal": False},
        "screen": {"port": 0},
        "rooms": [
            {"name": f"room{i:02d}", "sources": [sim(i)]}
            for i in range(rooms)
        ],
    }
    if classifier:
        data["classifier"] = {"name": classifier}
    return parse_config(data)


async def _page(url: str, received: list[int]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            received[0] += 1


async def run_service(
    *, rooms: int, rate: float, seconds: float, classifier: str | None = None, clients: int = 2,
    sample_s: float = 1.0, warmup_s: float = 3.0, progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the App for `seconds` under `rooms` × `rate` comments/s; measure, then count what was stored."""
    from bot.app import App
    from bot.outputs.store import Store

    with tempfile.TemporaryDirectory(prefix="livebot-load-") as tmp:
        cfg = service_config(Path(tmp), rooms=rooms, rate=rate, classifier=classifier)
        clock = SystemClock()
        app = App(cfg, clock=clock, out=io.StringIO())
        _warm_up(app)
        sources = [
            SteadySource(r.name, rate, clock=clock, hasher=app.hasher, seed=i + 1)
            for i, r in enumerate(cfg.rooms)
        ]
        app.sources = list(sources)
        for src in sources:
            st = app.pipeline.state(src.status.room)
            st.sources.clear()
            st.sources["simulator:0"] = src.status
        latency = _Latency(since=monotonic() + warmup_s)
        app.pipeline.hooks.append(latency.hook(clock))
        proc = psutil.Process()
        cpu0 = proc.cpu_times()
        t0 = monotonic()
        run = asyncio.create_task(app.run(duration_s=seconds))
        frames = [0]
        pages: list[asyncio.Task[None]] = []
        if app.screen is not None and clients:
            while not app.screen.running and not run.done():
                await asyncio.sleep(0.01)
            if app.screen.running:
                pages = [asyncio.create_task(_page(app.screen.url + "ws", frames)) for _ in range(clients)]
        samples = _Samples()
        peak_queue = 0
        next_sample = t0
        while not run.done():
            peak_queue = max(peak_queue, app.pipeline.queue_depth)
            now = monotonic()
            if now >= next_sample:
                samples.t_s.append(round(now - t0, 1))
                samples.rss_mb.append(round(proc.memory_info().rss / 2**20, 1))
                samples.queue.append(app.pipeline.queue_depth)
                next_sample += sample_s
                if progress is not None:
                    progress(f"t={now - t0:.0f}s rss={samples.rss_mb[-1]} MB queue={samples.queue[-1]} "
                             f"stored={app.pipeline.stats.stored}")
            await asyncio.wait({run}, timeout=0.05)
        await run
        elapsed = monotonic() - t0
        cpu1 = proc.cpu_times()
        for page in pages:
            page.cancel()
        await asyncio.gather(*pages, return_exceptions=True)
        stats = app.pipeline.stats
        submitted = sum(s.submitted for s in sources)
        comments = sum(s.comments for s in sources)
        with Store.open(cfg.store_path) as store:
            rows = int(store.execute("SELECT COUNT(*) FROM events")[0][0])
            analysed_rows = int(store.execute("SELECT COUNT(*) FROM analyses")[0][0])
            ended = int(store.execute("SELECT COUNT(*) FROM sessions WHERE ended_ts IS NOT NULL")[0][0])
        p50, p99 = latency.percentile(0.5), latency.percentile(0.99)
        return {
            "rooms": rooms,
            "offered_comments_per_s": rooms * rate,
            "seconds": seconds,
            "comments_submitted": comments,
            "events_submitted": submitted,
            "events_per_s": round(stats.received / elapsed, 1),
            "comments_analysed": stats.analyzed,
            "analysed_per_s": round(stats.analyzed / elapsed, 1),
            "p50_ms": p50,
            "p99_ms": p99,
            "latency_max_ms": float(max(latency.counts)) if latency.counts else None,
            "shed": stats.shed,
            "fallback": stats.fallback,
            "store_waits": stats.store_waits,
            "queue_peak": peak_queue,
            "store_backlog_max": stats.store_backlog_max,
            "duplicates": stats.duplicates,
            "stored_rows": rows,
            "analysis_rows": analysed_rows,
            "lost_events": submitted - stats.duplicates - rows,
            "sessions_ended": ended,
            "screen_frames": frames[0],
            "rss_mb_peak": max(samples.rss_mb, default=None),
            "rss_mb_end": round(proc.memory_info().rss / 2**20, 1),
            "cpu_util": round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed, 2),
            "cpu_count": os.cpu_count(),
            "_samples": samples,
        }


def _warm_up(app: App) -> None:
    # Lexicons and jieba load on first use; do it before the clock starts, as a running service would have.
    from bot.bench import bench_comments

    analyzer: Any = app.pipeline._analyzer
    analyzer.analyze(bench_comments(64))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@_scenario("load")
def load_scenario(
    *, rooms: int = 10, rate: float = 300.0, seconds: float = 60.0, classifier: str | None = None,
    clients: int = 2, quiet: bool = False, **_: Any,
) -> dict[str, Any]:
    """10 rooms × 300 comments/s for 60 s through the whole service (defaults)."""
    out = asyncio.run(run_service(
        rooms=rooms, rate=rate, seconds=seconds, classifier=classifier, clients=clients,
        progress=None if quiet else _throttled(_stderr, every=10),
    ))
    out.pop("_samples")
    return {"scenario": "load", **out}


@_scenario("soak")
def soak_scenario(
    *, minutes: float = 30.0, rooms: int = 3, rate: float = 100.0, sample_s: float = 10.0,
    classifier: str | None = None, clients: int = 2, quiet: bool = False, **_: Any,
) -> dict[str, Any]:
    """`minutes` at rooms × rate comments/s; RSS drift after the warm-up must stay within ±10%."""
    seconds = minutes * 60
    warmup = min(300.0, seconds / 2)
    out = asyncio.run(run_service(
        rooms=rooms, rate=rate, seconds=seconds, classifier=classifier, clients=clients, sample_s=sample_s,
        progress=None if quiet else _stderr,
    ))
    samples: _Samples = out.pop("_samples")
    return {"scenario": "soak", "minutes": minutes, "warmup_s": warmup, **out, **rss_drift(samples, warmup)}


def rss_drift(samples: _Samples, warmup_s: float) -> dict[str, Any]:
    """RSS after the warm-up: the first post-warm-up sample is the baseline; drift to the last sample,
    the largest deviation either way, and the trend (least squares, MB per hour)."""
    post = [(t, r) for t, r in zip(samples.t_s, samples.rss_mb, strict=True) if t >= warmup_s]
    if len(post) < 2:
        return {"rss_drift_pct": None, "rss_within_10pct": None, "rss_samples": len(samples.rss_mb)}
    base = post[0][1]
    devs: list[float] = [(r - base) / base * 100 for _, r in post]
    worst = max(devs, key=lambda d: abs(d))
    n = len(post)
    mt = sum(t for t, _ in post) / n
    mr = sum(r for _, r in post) / n
    var = sum((t - mt) ** 2 for t, _ in post)
    slope = sum((t - mt) * (r - mr) for t, r in post) / var if var else 0.0
    return {
        "rss_mb_after_warmup": base,
        "rss_drift_pct": round(devs[-1], 2),
        "rss_max_dev_pct": round(worst, 2),
        "rss_trend_mb_per_h": round(slope * 3600, 1),
        "rss_within_10pct": all(abs(d) <= 10 for d in devs),
        "rss_samples": len(samples.rss_mb),
    }


def _throttled(fn: Callable[[str], None], *, every: int) -> Callable[[str], None]:
    count = [0]

    def call(line: str) -> None:
        if count[0] % every == 0:
            fn(line)
        count[0] += 1

    return call
