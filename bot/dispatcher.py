"""Dispatcher: fans suggestions (new ones and state changes) out to sinks.

Each sink gets the items in order, and the sinks run side by side: a sink that raises or hangs (bounded by
`timeout_s`) is logged and counted, and never delays or blocks the others. A sink's first failure is logged
with its traceback, repeats are only counted until it works again (STYLE.md *Logging*).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Protocol

from bot.advisors.base import Suggestion, SuggestionState

if TYPE_CHECKING:
    from bot.outputs.store import Store

log = logging.getLogger(__name__)


class Sink(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, item: Suggestion) -> None:
        """Take one suggestion: a new one, or a state change of one sent before."""
        ...


class Dispatcher:
    """Sends every suggestion to every sink; one failing sink never blocks the others."""

    def __init__(self, sinks: Sequence[Sink] = (), *, timeout_s: float = 5.0) -> None:
        self.sinks = list(sinks)
        self.timeout_s = timeout_s
        self.sent: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._failing: set[str] = set()
        self._started = False

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("Dispatcher is already started")
        self._started = True
        for sink in self.sinks:
            await self._guard(sink, "start", sink.start())

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        for sink in reversed(self.sinks):
            await self._guard(sink, "stop", sink.stop())

    async def __aenter__(self) -> Dispatcher:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def dispatch(self, items: Sequence[Suggestion]) -> None:
        """Send `items` (in order) to every sink, the sinks concurrently."""
        if not items or not self.sinks:
            return
        await asyncio.gather(*(self._send_all(sink, items) for sink in self.sinks))

    async def _send_all(self, sink: Sink, items: Sequence[Suggestion]) -> None:
        for item in items:
            if await self._guard(sink, "send", sink.send(item)):
                self.sent[sink.name] += 1

    async def _guard(self, sink: Sink, what: str, coro: Any) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed[sink.name] += 1
            if sink.name not in self._failing:
                self._failing.add(sink.name)
                detail = "timed out" if isinstance(exc, TimeoutError) else "failed"
                log.error("sink %s %s %s; further failures are only counted", sink.name, what, detail,
                          exc_info=not isinstance(exc, TimeoutError))
            return False
        if sink.name in self._failing:
            self._failing.discard(sink.name)
            log.info("sink %s works again after %d failure(s)", sink.name, self.failed[sink.name])
        return True


# -- sinks ----------------------------------------------------------------------------------------


def suggestion_record(s: Suggestion) -> dict[str, Any]:
    """The `--suggestions-out` line of one suggestion (event-time ms in `ts`); stable key order."""
    out: dict[str, Any] = {"ts": s.created_ts, "id": s.id, "kind": str(s.kind)}
    if s.segment is not None:
        out["segment"] = s.segment
    if s.topic is not None:
        out["topic"] = s.topic
    if s.rule is not None:
        out["rule"] = s.rule
        out["severity"] = str(s.severity)
    out["text"] = s.text
    out["reason"] = s.reason
    out["confidence"] = round(s.confidence, 4)
    out["needs_review"] = s.needs_review
    if s.examples:
        out["examples"] = list(s.examples)
    return out


def suggestion_line(s: Suggestion) -> str:
    return json.dumps(suggestion_record(s), ensure_ascii=False, separators=(",", ":"))


class JsonlSink:
    """Appends each new suggestion as one JSON line (state changes are not repeated)."""

    name = "jsonl"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f: IO[str] | None = None
        self._seen: set[str] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("w", encoding="utf-8")

    async def stop(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    async def send(self, item: Suggestion) -> None:
        if self._f is None:
            raise RuntimeError("JsonlSink is not started")
        if item.id in self._seen:
            return
        self._seen.add(item.id)
        self._f.write(suggestion_line(item) + "\n")
        self._f.flush()


class CallbackSink:
    """A sink around a plain function (tests, the host-screen hub)."""

    def __init__(self, name: str, fn: Callable[[Suggestion], None]) -> None:
        self.name = name
        self._fn = fn

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, item: Suggestion) -> None:
        self._fn(item)


class StoreSink:
    """Saves suggestions and their state changes in the SQLite store, off the event loop, in order.

    `session_id` maps a room to its session (e.g. `Pipeline.sessions.get`). A session exists only once the
    pipeline has stored the room's first batch; suggestions that come earlier wait in a bounded buffer and
    are written as soon as it is known.
    """

    name = "store"

    def __init__(
        self, store: Store, session_id: str | Callable[[str], str | None], *, buffer: int = 1000
    ) -> None:
        self._store = store
        self._session_id = session_id
        self._saved: set[str] = set()
        self._buffer: deque[Suggestion] = deque(maxlen=buffer)
        self._pool: ThreadPoolExecutor | None = None

    def _sid(self, room: str) -> str | None:
        return self._session_id(room) if callable(self._session_id) else self._session_id

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="livebot-suggestions")

    async def stop(self) -> None:
        await self._flush()
        if self._buffer:
            log.warning("%d suggestion(s) not stored: their room's session never started", len(self._buffer))
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    async def send(self, item: Suggestion) -> None:
        if self._buffer:
            await self._flush()
        sid = self._sid(item.room)
        if sid is None:
            if len(self._buffer) == self._buffer.maxlen:
                log.warning("suggestion buffer full before the session started; dropping the oldest")
            self._buffer.append(item)
            return
        await self._write(sid, item)

    async def _flush(self) -> None:
        waiting, self._buffer = self._buffer, deque(maxlen=self._buffer.maxlen)
        for item in waiting:
            sid = self._sid(item.room)
            if sid is None:
                self._buffer.append(item)
            else:
                await self._write(sid, item)

    async def _write(self, sid: str, item: Suggestion) -> None:
        if self._pool is None:
            raise RuntimeError("StoreSink is not started")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self.write_now, sid, item)

    def write_now(self, sid: str, item: Suggestion) -> None:
        """Synchronous write (the sink's worker thread, or replay after the run)."""
        if item.id in self._saved and item.state is not SuggestionState.PENDING:
            ts = int(item.data.get("state_ts", item.created_ts))
            if self._store.set_suggestion_state(sid, item.id, str(item.state), ts, item.data):
                return
        self._store.save_suggestion(sid, item)
        self._saved.add(item.id)
