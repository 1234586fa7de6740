"""Shared fixtures: no real network, a temporary data dir, the shared data folder."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bot.paths import shared_dir

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
