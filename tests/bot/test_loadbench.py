"""The load/soak benchmark machinery (the figures themselves are measured by `livebot bench`, not here)."""

from __future__ import annotations

import pytest

from bot.bench import SCENARIOS, run_bench
from bot.loadbench import _Latency, _Samples, rss_drift


def test_load_and_soak_are_registered() -> None:
    assert {"pipeline", "screen", "load", "soak"} <= set(SCENARIOS)


def test_rss_drift_after_warmup() -> None:
    samples = _Samples(t_s=[0, 100, 200, 300, 400], rss_mb=[50, 90, 100, 104, 99])
    out = rss_drift(samples, warmup_s=200)
    assert out["rss_mb_after_warmup"] == 100
    assert out["rss_drift_pct"] == -1.0 and out["rss_max_dev_pct"] == 4.0
    assert out["rss_within_10pct"] is True
    assert rss_drift(_Samples(t_s=[0], rss_mb=[1.0]), warmup_s=10)["rss_within_10pct"] is None


def test_latency_percentiles_from_the_histogram() -> None:
    lat = _Latency(since=0)
    lat.counts.update({1: 50, 2: 40, 30: 9, 500: 1})
    # The value at index int(n * q) of the sorted latencies (n = 100 here).
    assert lat.percentile(0.49) == 1 and lat.percentile(0.5) == 2
    assert lat.percentile(0.9) == 30 and lat.percentile(0.99) == 500


@pytest.mark.slow
def test_a_short_load_run_stores_every_event() -> None:
    out = run_bench("load", rooms=2, rate=50, seconds=1.5, clients=1, quiet=True)
    assert out["lost_events"] == 0
    assert out["stored_rows"] == out["events_submitted"] > 0
    assert out["sessions_ended"] == 2
    assert out["cpu_count"] >= 1
