"""Resource bounds for fuzz cases: a hang fails the test instead of stalling the run; memory is measured."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest


def bounded(fn: Callable[[], Any], *, seconds: float = 60.0, mb: float = 64.0) -> Any:
    """Run `fn` in a daemon thread; fail if it runs longer than `seconds` or its allocations peak above `mb`.

    The limits are generous ceilings for a broken parser (a hang, unbounded buffering), not timings.
    """
    result: dict[str, Any] = {}

    def run() -> None:
        tracemalloc.start()
        try:
            result["value"] = fn()
        except BaseException as e:  # handed to the test thread below
            result["error"] = e
        finally:
            result["peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

    worker = threading.Thread(target=run, daemon=True, name="fuzz-bounded")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"still running after {seconds:g} s: a hang")
    if "error" in result:
        raise result["error"]
    peak_mb = result["peak"] / 2**20
    assert peak_mb <= mb, f"allocations peaked at {peak_mb:.1f} MB (bound {mb:g} MB)"
    return result.get("value")
