"""A fake upstream that *serves* generic-JSON events (protocols/generic_json.md) to clients that connect.

`PushServer` is an aiohttp `AppRunner` + `TCPSite` on port 0 (aiohttp `examples/fake_server.py`) that pushes
text frames to every connected client, can drop them all (a server restart) and replays its last few
messages to each new connection, as a real upstream that resends after a reconnect does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Self

from aiohttp import WSCloseCode, WSMsgType, web

from bot.events import Event
from bot.sources.base import Emit, Source


class PushServer:
    """Websocket server on 127.0.0.1:<free port> that pushes whatever the test gives it."""

    def __init__(self, *, path: str = "/", token: str | None = None, replay_on_connect: int = 0) -> None:
        self.path = path
        self.token = token
        self.replay_on_connect = replay_on_connect
        self.sent: list[str] = []
        """Every message pushed, in order (the replay buffer)."""
        self.received: list[str] = []
        """Text frames clients sent to us (a BarrageGrab client must send none)."""
        self.authorization: list[str | None] = []
        """The Authorization header of each connection attempt."""
        self.connections_total = 0
        self._clients: set[web.WebSocketResponse] = set()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("PushServer is not started")
        return f"ws://127.0.0.1:{self._port}{self.path}"

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self._route(), self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Close every client and stop listening; `start()` again listens on the same port."""
        await self.drop_clients(WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _route(self) -> str:
        return self.path

    async def push(self, message: str | Any) -> None:
        """Send one text frame (a str as is, anything else JSON-encoded compactly) to every client."""
        text = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False)
        self.sent.append(text)
        for ws in list(self._clients):
            await ws.send_str(text)

    async def drop_clients(self, code: int = WSCloseCode.SERVICE_RESTART) -> None:
        for ws in list(self._clients):
            await ws.close(code=code, message=b"fake server drop")
        await self.wait_clients(0)

    async def wait_clients(self, count: int) -> None:
        """Wait until exactly `count` clients are connected (wrap in asyncio.wait_for)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._clients) == count)

    async def wait_connections(self, total: int) -> None:
        """Wait until `total` connections have been accepted since start (wrap in asyncio.wait_for)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.connections_total >= total)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        auth = request.headers.get("Authorization")
        self.authorization.append(auth)
        if self.token is not None and auth != f"Bearer {self.token}":
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"bad token")
            return ws
        for text in self.sent[-self.replay_on_connect :] if self.replay_on_connect else []:
            await ws.send_str(text)
        self._clients.add(ws)
        self.connections_total += 1
        await self._notify()
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    self.received.append(msg.data)
        finally:
            self._clients.discard(ws)
            await self._notify()
        return ws


class GenericPushServer(PushServer):
    """Pushes generic-JSON events; `replay_on_connect` resends the last N to a reconnecting client."""

    async def push_event(self, **fields: Any) -> None:
        await self.push(fields)


class EventCollector:
    """An `emit` callback that keeps every Event and lets a test await the next one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._queue.put_nowait(event)

    async def next(self, timeout: float = 5.0) -> Event:
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def take(self, count: int, timeout: float = 5.0) -> list[Event]:
        return [await self.next(timeout) for _ in range(count)]

    def pending(self) -> int:
        return self._queue.qsize()


@contextlib.asynccontextmanager
async def running(source: Source, emit: Emit, timeout: float = 5.0) -> AsyncIterator[asyncio.Task[None]]:
    """Run `source.run(emit)` as a task; stop it and wait for it on the way out."""
    task = asyncio.create_task(source.run(emit))
    try:
        yield task
    finally:
        source.stop()
        await asyncio.wait_for(task, timeout)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until `predicate()` holds; fails after `timeout` (a bound, not a timing)."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.002)

    await asyncio.wait_for(poll(), timeout)
