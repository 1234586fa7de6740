"""Shared fixtures: no real network, a temporary data dir, the shared data folder."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.paths import shared_dir
from tests.browser import CHROMIUM, CHROMIUM_ARGS, DEFAULT_VIEWPORT

_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: object) -> None:
    # Like PTB's OfflineRequest: a test that reaches past loopback is a bug, fail it loudly.
    host = address[0] if isinstance(address, tuple) else None
    if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::"):
        pytest.fail(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture
def shared() -> Path:
    d = shared_dir()
    if d is None:
        pytest.skip("../shared is not beside the repository")
    return d


@pytest.fixture
async def browser(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh headless Chromium context (new profile dir); a module may set BROWSER_VIEWPORT."""
    playwright = pytest.importorskip("playwright.async_api")
    viewport = getattr(request.module, "BROWSER_VIEWPORT", DEFAULT_VIEWPORT)
    async with playwright.async_playwright() as p:
        ctx = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            viewport=viewport, locale="zh-CN",
        )
        try:
            yield ctx
        finally:
            await ctx.close()
