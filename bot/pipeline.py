"""Bounded queue → batcher (size, max wait) → analyzer in a worker thread → RoomState and store.

Nothing is dropped silently. Duplicates (same platform/room/msg_id after a reconnect) are dropped and
counted. When the queue is full, the configured overflow policy applies and is counted:
``block`` waits for room (replay: the reader slows down), ``shed_analysis`` keeps the event (stored,
counted in RoomState) but skips NLP for it, so a live source is never blocked.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from bot.clock import Clock, monotonic
from bot.events import Event, EventKind
from bot.state import RoomState

if TYPE_CHECKING:
    from bot.outputs.store import Store
    from nlp.analyzer import Analysis, Analyzer

log = logging.getLogger(__name__)

Overflow = Literal["shed_analysis", "block"]
AnalyzedHook = Callable[[Sequence[Event], Sequence["Analysis | None"]], None]

_STOP = object()


@dataclass(slots=True)
class PipelineStats:
    received: int = 0
    duplicates: int = 0
    analyzed: int = 0
    shed: int = 0
    stored: int = 0
    store_errors: int = 0
    batches: int = 0
    blocked: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    """Event received (clock) → applied to RoomState, ms; kept only when `record_latency` is on."""

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "analyzed": self.analyzed,
            "shed": self.shed,
            "stored": self.stored,
            "store_errors": self.store_errors,
            "batches": self.batches,
            "blocked": self.blocked,
        }


class _Dedup:
    """Bounded LRU of recent (platform, room, msg_id)."""

    def __init__(self, cap: int = 50_000) -> None:
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._cap = cap

    def seen(self, ev: Event) -> bool:
        if ev.msg_id is None:
            return False
        key = (ev.platform, ev.room, ev.msg_id)
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        self._seen[key] = None
        if len(self._seen) > self._cap:
            self._seen.popitem(last=False)
        return False


class Pipeline:
    """Runs events from sources to RoomState (and the store), batching the NLP work."""

    def __init__(
        self,
        analyzer: Analyzer,
        *,
        clock: Clock,
        store: Store | None = None,
        queue_size: int = 20000,
        batch_size: int = 128,
        max_wait_ms: int = 20,
        overflow: Overflow = "shed_analysis",
        record_latency: bool = False,
        session_meta: dict[str, object] | None = None,
    ) -> None:
        self._analyzer = analyzer
        self._clock = clock
        self._store = store
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._max_wait = max_wait_ms / 1000
        self._overflow: Overflow = overflow
        self._record_latency = record_latency
        self._session_meta = session_meta or {}
        self._dedup = _Dedup()
        self._shed: list[Event] = []
        self._nlp_pool = ThreadPoolExecutor(1, thread_name_prefix="livebot-nlp")
        self._store_pool = ThreadPoolExecutor(1, thread_name_prefix="livebot-store")
        self._store_tasks: set[asyncio.Future[None]] = set()
        self.states: dict[str, RoomState] = {}
        self.sessions: dict[str, str] = {}
        self.session_ids: dict[str, str] = {}
        """Preset session ids per room (resume); otherwise made from the first event's time."""
        self.stats = PipelineStats()
        self.hooks: list[AnalyzedHook] = []
        self.before_apply: list[Callable[[Event], None]] = []
        """Called with each event, in order, just before it is applied to RoomState (replay ticks advisors
        here on event time, so a tick sees exactly the events before it, however events were batched)."""
        self._running = False
        self._stopping = False

    # -- input (the Emit callback of every source) -----------------------------------------------

    def state(self, room: str) -> RoomState:
        st = self.states.get(room)
        if st is None:
            st = self.states[room] = RoomState(room)
        return st

    async def submit(self, event: Event) -> None:
        """Take one event from a source. Never blocks with shed_analysis; blocks with block."""
        if self._stopping:
            raise RuntimeError("Pipeline is stopping; sources must stop before it")
        self.stats.received += 1
        if self._dedup.seen(event):
            self.stats.duplicates += 1
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            if self._overflow == "block":
                self.stats.blocked += 1
                await self._queue.put(event)
            else:
                self._shed_event(event)

    def _shed_event(self, event: Event) -> None:
        # Counted, applied without NLP and stored with the next batch: late analysis, not lost data.
        if self.stats.shed == 0:
            log.warning("analysis is behind: queue full, storing events without NLP until it catches up")
        self.stats.shed += 1
        st = self.state(event.room)
        st.degraded = True
        for before in self.before_apply:
            before(event)
        st.apply(event, None)
        self._shed.append(event)

    # -- the consumer -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until stop(); the last batch is processed before returning."""
        if self._running:
            raise RuntimeError("Pipeline is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch, stop = await self._next_batch()
                if batch:
                    await self._process(loop, batch)
                elif self._shed:
                    self._flush_shed(loop)
                if stop:
                    break
            self._flush_shed(loop)
            if self._store_tasks:
                await asyncio.gather(*self._store_tasks)
        finally:
            self._running = False

    async def _next_batch(self) -> tuple[list[Event], bool]:
        first = await self._queue.get()
        if first is _STOP:
            return [], True
        batch: list[Event] = [first]  # type: ignore[list-item]
        deadline = monotonic() + self._max_wait
        while len(batch) < self._batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if item is _STOP:
                return batch, True
            batch.append(item)  # type: ignore[arg-type]
        return batch, False

    async def _process(self, loop: asyncio.AbstractEventLoop, batch: list[Event]) -> None:
        chat_idx = [i for i, ev in enumerate(batch) if ev.kind is EventKind.CHAT and ev.text]
        analyses: list[Analysis | None] = [None] * len(batch)
        if chat_idx:
            texts = [batch[i].text for i in chat_idx]
            results = await loop.run_in_executor(self._nlp_pool, self._analyzer.analyze, texts)
            for i, a in zip(chat_idx, results, strict=True):
                analyses[i] = a
            self.stats.analyzed += len(chat_idx)
        self.stats.batches += 1
        for ev, an in zip(batch, analyses, strict=True):
            for before in self.before_apply:
                before(ev)
            self.state(ev.room).apply(ev, an)
        now = self._clock.now_ms()
        if self._record_latency:
            self.stats.latencies_ms.extend(now - ev.received_ts for ev in batch)
        for room_state in {ev.room for ev in batch}:
            st = self.states[room_state]
            if st.degraded and self._queue.qsize() < self._queue.maxsize // 2:
                st.degraded = False
                log.info("room=%s analysis caught up", room_state)
        for hook in self.hooks:
            hook(batch, analyses)
        self._store_batch(loop, batch, analyses)
        if self._shed:
            self._flush_shed(loop)

    def _flush_shed(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._shed:
            return
        shed, self._shed = self._shed, []
        self._store_batch(loop, shed, [None] * len(shed))

    def _store_batch(
        self, loop: asyncio.AbstractEventLoop, batch: list[Event], analyses: Sequence[Analysis | None]
    ) -> None:
        if self._store is None:
            return
        by_room: dict[str, tuple[list[Event], list[Analysis | None]]] = {}
        for ev, an in zip(batch, analyses, strict=True):
            evs, ans = by_room.setdefault(ev.room, ([], []))
            evs.append(ev)
            ans.append(an)
        for room, (evs, ans) in by_room.items():
            fut = loop.run_in_executor(self._store_pool, self._write, room, evs, ans)
            self._store_tasks.add(fut)
            fut.add_done_callback(self._store_tasks.discard)

    def _write(self, room: str, events: list[Event], analyses: list[Analysis | None]) -> None:
        # Runs in the store thread; errors are logged and counted, never raised into the loop.
        assert self._store is not None
        try:
            sid = self.sessions.get(room)
            if sid is None:
                first = min(ev.received_ts for ev in events)
                sid = self._store.start_session(
                    room, first, session_id=self.session_ids.get(room), meta=dict(self._session_meta)
                )
                self.sessions[room] = sid
            self._store.write_batch(sid, events, analyses)
            self.stats.stored += len(events)
        except Exception:
            self.stats.store_errors += len(events)
            log.exception("room=%s could not store %d events", room, len(events))

    async def stop(self) -> None:
        """Drain: everything submitted before stop() is analysed and stored, then run() returns."""
        if self._stopping:
            return
        self._stopping = True
        # Always enqueue the sentinel: run() may be scheduled but not yet started.
        await self._queue.put(_STOP)

    def close(self) -> None:
        self._nlp_pool.shutdown(wait=True)
        self._store_pool.shutdown(wait=True)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()
