"""Bounded queue → batcher (size, max wait) → analyzer in a worker thread → RoomState and store.

Nothing is dropped silently, and every buffer between a source and the disk is bounded:

- the event queue holds at most `queue_size` events. When it is full, the overflow policy applies and
  is counted: ``block`` waits for room (replay: the reader slows down), ``shed_analysis`` keeps the event
  (stored, counted in RoomState) but skips NLP for it, so a live source is not blocked by slow analysis;
- the store backlog (events handed to the store thread, not yet committed) holds at most
  `store_backlog` events. Batches waiting for the store are coalesced into one transaction per room;
  when the backlog is full the pipeline waits for the store (counted in `store_waits`) instead of
  growing, so a store that cannot keep up finally slows the sources down rather than eating memory.

Live, analysis degrades in steps, visibly (``RoomState.degraded``, `analysis_mode`, counters), so
what the host sees stays fresh: ``normal`` → ``fallback`` (a batch waited longer than `degrade_lag_ms`:
analyse with the fast `fallback` analyzer, e.g. the rules classifier behind a transformer) →
``sampling`` (no fallback, or still twice as late: analyse every n-th comment, the rest is stored and
counted without NLP) → ``shedding`` (queue full: store without NLP). It recovers once the queue has
drained: the configured analyzer takes over again and the rooms' degraded flags clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from bot.clock import Clock, monotonic
from bot.events import Event, EventKind
from bot.state import DelayThresholds, RoomState

if TYPE_CHECKING:
    from bot.outputs.store import Store
    from nlp.analyzer import Analysis, Analyzer

log = logging.getLogger(__name__)

Overflow = Literal["shed_analysis", "block"]
AnalysisMode = Literal["normal", "fallback", "sampling", "shedding"]
AnalyzedHook = Callable[[Sequence[Event], Sequence["Analysis | None"]], None]
StoredHook = Callable[[Sequence[Event]], None]

_STOP = object()
_MAX_SAMPLE_STEP = 10
"""While behind, at least one comment in this many is still analysed."""


@dataclass(slots=True)
class PipelineStats:
    received: int = 0
    duplicates: int = 0
    analyzed: int = 0
    """Comments analysed by the configured analyzer or the fallback."""
    fallback: int = 0
    """Comments analysed by the fast fallback analyzer because analysis was behind."""
    sampled_out: int = 0
    """Comments stored without NLP because analysis was behind and only a sample was analysed."""
    shed: int = 0
    """Events stored and counted without NLP because the queue was full."""
    stored: int = 0
    store_errors: int = 0
    batches: int = 0
    blocked: int = 0
    store_waits: int = 0
    """Times the pipeline waited because the store backlog was full."""
    store_backlog_max: int = 0
    """Largest store backlog seen, in events."""
    latencies_ms: list[float] = field(default_factory=list)
    """Event received (clock) → applied to RoomState, ms; kept only when `record_latency` is on."""

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "analyzed": self.analyzed,
            "fallback": self.fallback,
            "sampled_out": self.sampled_out,
            "shed": self.shed,
            "stored": self.stored,
            "store_errors": self.store_errors,
            "batches": self.batches,
            "blocked": self.blocked,
            "store_waits": self.store_waits,
            "store_backlog_max": self.store_backlog_max,
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


class _StoreBacklog:
    """Events on their way to the store thread: bounded, coalesced per room, written one batch at a time.

    While one write runs in the store thread, later batches collect here and go in the next
    transaction together (SQLite commits cost far more than rows, so a store that falls behind
    catches up with bigger batches). `size` counts pending plus in-flight events.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.size = 0
        self._pending: dict[str, tuple[list[Event], list[Analysis | None]]] = {}
        self._has_pending = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, events: Sequence[Event], analyses: Sequence[Analysis | None]) -> None:
        for ev, an in zip(events, analyses, strict=True):
            evs, ans = self._pending.setdefault(ev.room, ([], []))
            evs.append(ev)
            ans.append(an)
        self.size += len(events)
        self._has_pending.set()
        self._idle.clear()
        if self.size >= self.cap:
            self._space.clear()

    @property
    def full(self) -> bool:
        return self.size >= self.cap

    async def wait_for_space(self) -> None:
        while self.size >= self.cap:
            self._space.clear()
            await self._space.wait()

    async def wait_pending(self) -> None:
        await self._has_pending.wait()

    def take(self) -> dict[str, tuple[list[Event], list[Analysis | None]]]:
        pending, self._pending = self._pending, {}
        self._has_pending.clear()
        return pending

    def done(self, n: int) -> None:
        self.size -= n
        if self.size < self.cap:
            self._space.set()
        if self.size == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


class Pipeline:
    """Runs events from sources to RoomState (and the store), batching the NLP work.

    Args:
        fallback: fast analyzer used while analysis is behind (live only; None = sample instead).
        degrade_lag_ms: a batch whose oldest event waited this long means analysis is behind (see
            `_plan`); None = never degrade (replay and benchmarks analyse everything).
        store_backlog: most events waiting for (or in) a store write before the pipeline waits.
    """

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
        fallback: Analyzer | None = None,
        degrade_lag_ms: int | None = None,
        store_backlog: int = 50_000,
    ) -> None:
        if store_backlog < 1:
            raise ValueError("store_backlog must be at least 1")
        self._analyzer = analyzer
        self._fallback = fallback
        self._degrade_lag_ms = degrade_lag_ms
        self._clock = clock
        self._store = store
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._max_wait = max_wait_ms / 1000
        self._overflow: Overflow = overflow
        self._record_latency = record_latency
        self._session_meta = session_meta or {}
        self._dedup = _Dedup()
        self._backlog = _StoreBacklog(store_backlog)
        self._nlp_pool = ThreadPoolExecutor(1, thread_name_prefix="livebot-nlp")
        self._store_pool = ThreadPoolExecutor(1, thread_name_prefix="livebot-store")
        self._behind = False
        self._step = 1
        self._sample_pos = 0
        self._shedding = False
        self._degraded_rooms: set[str] = set()
        self.states: dict[str, RoomState] = {}
        self.sessions: dict[str, str] = {}
        self.session_ids: dict[str, str] = {}
        """Preset session ids per room (resume); otherwise made from the first event's time."""
        self.stats = PipelineStats()
        self.hooks: list[AnalyzedHook] = []
        self.before_apply: list[Callable[[Event], None]] = []
        """Called with each event, in order, just before it is applied to RoomState (replay ticks advisors
        here on event time, so a tick sees exactly the events before it, however events were batched)."""
        self.on_stored: list[StoredHook] = []
        """Called on the event loop with the events of each committed store write (the bus acknowledges
        its messages here, so a message is acknowledged only once it is on disk)."""
        self.delay_thresholds = DelayThresholds()
        """Given to every room's RoomState (the app sets it from `[advisors.alerts]`)."""
        self._running = False
        self._stopping = False

    # -- input (the Emit callback of every source) -----------------------------------------------

    def state(self, room: str) -> RoomState:
        st = self.states.get(room)
        if st is None:
            st = self.states[room] = RoomState(room, delay_thresholds=self.delay_thresholds)
        return st

    async def submit(self, event: Event) -> None:
        """Take one event from a source (the Emit of every source); see `offer`."""
        await self.offer(event)

    async def offer(self, event: Event) -> bool:
        """Take one event; False when it was dropped as a duplicate (same platform/room/msg_id).

        With shed_analysis it waits only when the store backlog is full too; with block it waits for
        room in the queue.
        """
        if self._stopping:
            raise RuntimeError("Pipeline is stopping; sources must stop before it")
        self.stats.received += 1
        if self._dedup.seen(event):
            self.stats.duplicates += 1
            return False
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            if self._overflow == "block":
                self.stats.blocked += 1
                await self._queue.put(event)
            else:
                if self._backlog.full:
                    self.stats.store_waits += 1
                    await self._backlog.wait_for_space()
                self._shed_event(event)
        return True

    def _shed_event(self, event: Event) -> None:
        # Counted, applied without NLP and stored: late analysis, not lost data.
        if not self._shedding:
            self._shedding = True
            log.warning("analysis is behind: queue full, storing events without NLP until it catches up")
        self.stats.shed += 1
        self._mark_degraded(event.room)
        for before in self.before_apply:
            before(event)
        self.state(event.room).apply(event, None)
        self._to_store([event], [None])

    def _mark_degraded(self, room: str) -> None:
        self.state(room).degraded = True
        self._degraded_rooms.add(room)

    @property
    def analysis_mode(self) -> AnalysisMode:
        """normal, fallback (fast analyzer while behind), sampling (every n-th comment while behind) or
        shedding (queue full: no NLP)."""
        if self._shedding:
            return "shedding"
        if not self._behind:
            return "normal"
        return "sampling" if self._step > 1 else "fallback"

    # -- the consumer -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until stop(); the last batch is processed and stored before returning."""
        if self._running:
            raise RuntimeError("Pipeline is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        writer = asyncio.create_task(self._write_loop(loop), name="pipeline-store")
        try:
            while True:
                batch, stop = await self._next_batch()
                if batch:
                    await self._process(loop, batch)
                if stop:
                    break
            await self._backlog.wait_idle()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._running = False

    async def _next_batch(self) -> tuple[list[Event], bool]:
        first = await self._queue.get()
        if first is _STOP:
            return [], True
        batch: list[Event] = [first]  # type: ignore[list-item]
        # A comment waits at most max_wait for its batch to fill, counted from when it was received: one
        # that queued while the previous batch was being analysed has used up part of it already.
        waited = max(0.0, (self._clock.now_ms() - batch[0].received_ts) / 1000)
        deadline = monotonic() + max(0.0, self._max_wait - waited)
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

    def _plan(self, batch: list[Event]) -> tuple[Analyzer, int]:
        """Which analyzer runs this batch, and on every how-many-th comment (1 = all of them).

        While the oldest event of a batch has waited `degrade_lag_ms` or more, the pipeline is behind:
        the fallback analyzer takes over; without one (or once it is twice as late) only every
        step-th comment is analysed, step growing with the lag (2…10). It recovers once the queue
        holds at most one batch and the lag is below half the threshold.
        """
        threshold = self._degrade_lag_ms
        if threshold is None:
            return self._analyzer, 1
        lag = self._clock.now_ms() - min(ev.received_ts for ev in batch)
        if not self._behind and lag >= threshold:
            self._behind = True
            how = "the fast fallback classifier" if self._fallback is not None else "a sample of the comments"
            log.warning("analysis is %d ms behind: analysing with %s until it catches up", lag, how)
        elif self._behind and lag < threshold / 2 and self.queue_depth <= self._batch_size:
            self._behind = False
            log.info("analysis caught up (%d ms behind): back to the configured classifier", lag)
        if not self._behind:
            self._step = 1
            return self._analyzer, 1
        if self._fallback is not None and lag < 2 * threshold:
            self._step = 1
        else:
            self._step = min(_MAX_SAMPLE_STEP, max(2, -(-lag // threshold)))
        return self._fallback or self._analyzer, self._step

    async def _process(self, loop: asyncio.AbstractEventLoop, batch: list[Event]) -> None:
        chat_idx = [i for i, ev in enumerate(batch) if ev.kind is EventKind.CHAT and ev.text]
        analyses: list[Analysis | None] = [None] * len(batch)
        analyzer = self._analyzer
        if chat_idx:
            analyzer, step = self._plan(batch)
            if step > 1:
                # Every step-th comment, counted from a running position so no comment is favoured.
                keep = [i for n, i in enumerate(chat_idx, self._sample_pos) if n % step == 0]
                self._sample_pos += len(chat_idx)
                self.stats.sampled_out += len(chat_idx) - len(keep)
                chat_idx = keep
            if analyzer is not self._analyzer or step > 1:
                for room in {ev.room for ev in batch}:
                    self._mark_degraded(room)
        if chat_idx:
            texts = [batch[i].text for i in chat_idx]
            results = await loop.run_in_executor(self._nlp_pool, analyzer.analyze, texts)
            for i, a in zip(chat_idx, results, strict=True):
                analyses[i] = a
            self.stats.analyzed += len(chat_idx)
            if analyzer is not self._analyzer:
                self.stats.fallback += len(chat_idx)
        self.stats.batches += 1
        for ev, an in zip(batch, analyses, strict=True):
            for before in self.before_apply:
                before(ev)
            self.state(ev.room).apply(ev, an)
        now = self._clock.now_ms()
        if self._record_latency:
            self.stats.latencies_ms.extend(now - ev.received_ts for ev in batch)
        self._maybe_recover()
        for hook in self.hooks:
            hook(batch, analyses)
        if self._backlog.full:
            # The store is behind: wait here, so the queue (and then the overflow policy) takes the load.
            self.stats.store_waits += 1
            await self._backlog.wait_for_space()
        self._to_store(batch, analyses)

    def _maybe_recover(self) -> None:
        if self._shedding and self._queue.qsize() < self._queue.maxsize // 2:
            self._shedding = False
        if self._degraded_rooms and not self._shedding and not self._behind:
            for room in sorted(self._degraded_rooms):
                self.states[room].degraded = False
                log.info("room=%s analysis caught up", room)
            self._degraded_rooms.clear()

    # -- the store --------------------------------------------------------------------------------

    def _to_store(self, events: Sequence[Event], analyses: Sequence[Analysis | None]) -> None:
        if self._store is None:
            return
        self._backlog.put(events, analyses)
        if self._backlog.size > self.stats.store_backlog_max:
            self.stats.store_backlog_max = self._backlog.size

    async def _write_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        backlog = self._backlog
        while True:
            await backlog.wait_pending()
            pending = backlog.take()
            n = sum(len(evs) for evs, _ in pending.values())
            write = loop.run_in_executor(self._store_pool, self._write_all, pending)
            try:
                stored = await asyncio.shield(write)
            finally:
                backlog.done(n)
            for hook in self.on_stored:
                try:
                    hook(stored)
                except Exception:
                    log.exception("on_stored hook failed")

    def _write_all(self, pending: dict[str, tuple[list[Event], list[Analysis | None]]]) -> list[Event]:
        stored: list[Event] = []
        for room, (events, analyses) in pending.items():
            if self._write(room, events, analyses):
                stored += events
        return stored

    def _write(self, room: str, events: list[Event], analyses: list[Analysis | None]) -> bool:
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
            return True
        except Exception:
            self.stats.store_errors += len(events)
            log.exception("room=%s could not store %d events", room, len(events))
            return False

    def forget_room(self, room: str) -> None:
        """Another worker took `room` over (bus rebalancing): drop its state, and its session so this
        process does not end a session the other one continues."""
        self.states.pop(room, None)
        self.sessions.pop(room, None)
        self.session_ids.pop(room, None)
        self._degraded_rooms.discard(room)

    def remember(self, ev: Event) -> None:
        """Count `ev` as already received (a resumed session's stored events), for deduplication."""
        self._dedup.seen(ev)

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

    @property
    def store_backlog(self) -> int:
        """Events handed to the store and not yet committed."""
        return self._backlog.size
