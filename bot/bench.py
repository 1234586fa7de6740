"""`livebot bench`: throughput and latency, measured (not asserted) on this machine.

Scenario `pipeline` (default) reports the DESIGN.md bench keys that exist: pipeline and classifier
throughput, the SnowNLP baseline on the same comments in the same run, p50/p99 event→RoomState
latency at a fixed offered rate, and the cpu count. Figures are noisy: compare ratios within one run.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bot.clock import SystemClock, monotonic
from bot.events import Event, EventKind
from bot.outputs.store import Store
from bot.paths import replay_comments_file
from bot.pipeline import Pipeline

SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {}


def _scenario(name: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    def deco(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        SCENARIOS[name] = fn
        return fn

    return deco


def bench_comments(n: int) -> list[str]:
    """Real live comments from ../shared when present, else the simulator's; repeated up to n."""
    path = replay_comments_file()
    texts: list[str] = []
    if path is not None:
        texts = [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    if not texts:
        from bot.sources.simulator import Simulator

        sim = Simulator(seed=1, rate=50.0, room="bench", start_ts=0)
        texts = [ev.text for ev in sim.events(600) if ev.kind is EventKind.CHAT and ev.text]
    return [texts[i % len(texts)] for i in range(n)]


def _chat_events(texts: list[str], clock: SystemClock, room: str = "bench") -> list[Event]:
    now = clock.now_ms()
    return [
        Event(platform="bench", room=room, kind=EventKind.CHAT, ts=now, received_ts=now, msg_id=None,
              user_id=f"{i % 5000:016x}", text=t)
        for i, t in enumerate(texts)
    ]


def _make_analyzer(classifier: str) -> Any:
    from nlp.analyzer import Analyzer
    from nlp.classifiers import make_classifier

    return Analyzer(make_classifier(classifier))


def classifier_rate(name: str, texts: list[str], batch: int = 128) -> float:
    from nlp.classifiers import make_classifier

    clf = make_classifier(name)
    clf.predict(texts[:batch])  # warm-up: lazy lexicons, jieba, model load
    t0 = monotonic()
    for i in range(0, len(texts), batch):
        clf.predict(texts[i : i + batch])
    return len(texts) / (monotonic() - t0)


async def _pipeline_throughput(classifier: str, texts: list[str], store_path: Path) -> float:
    clock = SystemClock()
    analyzer = _make_analyzer(classifier)
    analyzer.analyze(texts[:64])
    with Store.open(store_path) as store:
        pipe = Pipeline(analyzer, clock=clock, store=store, overflow="block", queue_size=20000)
        events = _chat_events(texts, clock)
        task = asyncio.create_task(pipe.run())
        t0 = monotonic()
        for ev in events:
            await pipe.submit(ev)
        await pipe.stop()
        await task
        elapsed = monotonic() - t0
        pipe.close()
        assert pipe.stats.stored == len(events), "bench lost events"
    return len(events) / elapsed


async def _latency_at_rate(classifier: str, texts: list[str], rate: int, seconds: float) -> tuple[float, float]:
    clock = SystemClock()
    analyzer = _make_analyzer(classifier)
    analyzer.analyze(texts[:64])
    pipe = Pipeline(analyzer, clock=clock, store=None, record_latency=True)
    task = asyncio.create_task(pipe.run())
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    t0 = monotonic()
    i = 0
    while monotonic() - t0 < seconds:
        target = t0 + (i // per_tick + 1) * tick
        now = clock.now_ms()
        for _ in range(per_tick):
            t = texts[i % len(texts)]
            await pipe.submit(Event("bench", "lat", EventKind.CHAT, now, now, text=t))
            i += 1
        delay = target - monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await pipe.stop()
    await task
    pipe.close()
    lat = sorted(pipe.stats.latencies_ms)
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return p50, p99


@_scenario("pipeline")
def pipeline_scenario(
    *, classifier: str | None = None, n: int = 30000, rate: int = 1000, seconds: float = 5.0, **_: Any
) -> dict[str, Any]:
    if classifier is None:  # the configured default, as `livebot run` would use
        from bot.config import ClassifierConfig

        classifier = ClassifierConfig().name
    texts = bench_comments(n)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline_rate = asyncio.run(_pipeline_throughput(classifier, texts, Path(tmp) / "bench.db"))
    p50, p99 = asyncio.run(_latency_at_rate(classifier, texts, rate, seconds))
    return {
        "scenario": "pipeline",
        "classifier": classifier,
        "comments": n,
        "pipeline_comments_per_s": round(pipeline_rate, 1),
        "classifier_comments_per_s": round(classifier_rate(classifier, texts[: min(n, 20000)]), 1),
        "snownlp_comments_per_s": round(classifier_rate("snownlp", texts[:2000]), 1),
        "bilibili_decode_msgs_per_s": _decode_rate(20000),
        "offered_rate": rate,
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        "cpu_count": os.cpu_count(),
    }


def _decode_rate(n_msgs: int) -> float:
    from bot.sources.bilibili_wire import decode_benchmark

    return round(decode_benchmark(n_msgs), 1)


@_scenario("decode")
def decode_scenario(*, n: int = 20000, **_: Any) -> dict[str, Any]:
    """Bilibili frames → Events: brotli frames of 12 commands, decoded and mapped (no socket)."""
    return {
        "scenario": "decode",
        "messages": n,
        "bilibili_decode_msgs_per_s": _decode_rate(n),
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        "cpu_count": os.cpu_count(),
    }


@_scenario("screen")
def screen_scenario(**options: Any) -> dict[str, Any]:
    """Event → suggestion on 50 connected pages at 1,000 comments/s (`screen_p99_ms`)."""
    from bot.outputs.screen.bench import screen_scenario as run

    return run(**options)


def run_bench(scenario: str, **options: Any) -> dict[str, Any]:
    fn = SCENARIOS.get(scenario)
    if fn is None:
        from bot.errors import LivebotError

        raise LivebotError(f"unknown bench scenario {scenario!r}; known: {', '.join(sorted(SCENARIOS))}")
    return fn(**options)


# Scenarios defined in other modules register themselves on import (they use `_scenario` above).
from bot import loadbench as _loadbench  # noqa: E402,F401  (load, soak)
