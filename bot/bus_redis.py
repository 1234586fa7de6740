"""Redis Streams bus: one stream per room, a consumer group of workers, a lease per room.

Keys (all under `prefix`, default ``livebot:``):

    events:<room>   the room's stream; XADD MAXLEN ~ `maxlen`; field ``e`` holds the Event's replay-JSONL line
    rooms           set of rooms that have a stream (workers find rooms here)
    owner:<room>    lease: name of the worker that owns the room; PX `lease_ms`, renewed every lease_ms/3
    worker:<name>   heartbeat of a live worker, PX `lease_ms` (each worker takes its fair share of rooms)
    session:<room>  the room's session id while a worker owns it, so a worker taking over continues it

A room is analysed by the one worker holding its lease, so its RoomState lives in one process. A
worker reads its rooms' streams in the consumer group ``livebot`` (XREADGROUP) and acknowledges an
entry (XACK) only once the pipeline has committed its event to the store. A worker that dies stops
renewing its leases; when a lease runs out another worker takes the room and first claims the dead
worker's pending entries (XAUTOCLAIM), then reads on. Every owner also claims entries left pending
longer than `claim_idle_ms` (a failed store write, an earlier incarnation of itself).

Delivery is at-least-once. Duplicates it brings (an event stored but not yet acknowledged when its
worker died) are dropped by msg_id: against the pipeline's recent ids, and for claimed entries against
the store of the worker taking over (the same data directory: exactly once there). Events without a
msg_id, or a takeover by a worker with another data directory, can be stored twice.

MAXLEN bounds Redis memory: entries trimmed before any worker read them are lost, so size `maxlen`
above the longest backlog a room may build (default 100,000 events: over 5 minutes at 300 comments/s).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bot.bus import BusRole
from bot.clock import monotonic
from bot.errors import ProtocolError
from bot.events import Event
from bot.sources.base import ReconnectPolicy
from bot.sources.generic_json import parse_event

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError, ResponseError
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("the Redis bus needs the redis package: pip install 'livebot[redis]'") from e

if TYPE_CHECKING:
    from bot.outputs.store import Store
    from bot.pipeline import Pipeline

log = logging.getLogger(__name__)

GROUP = "livebot"
PUBLISH_BATCH = 500

# Compare-and-act on a lease: only the holder may renew or release it.
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


@dataclass(slots=True)
class RedisBusStats:
    published: int = 0
    publish_waits: int = 0
    """Times a source waited because the publish buffer was full (Redis slow or down)."""
    consumed: int = 0
    """Entries read and handed to the pipeline."""
    claimed: int = 0
    """Entries claimed from other (dead) consumers or left pending too long."""
    acked: int = 0
    duplicates: int = 0
    """Entries acknowledged without analysis: already stored, or a duplicate msg_id."""
    bad_entries: int = 0
    trimmed: int = 0
    """Pending entries MAXLEN removed before they were stored (lost)."""
    redis_errors: int = 0
    rooms_taken: int = 0
    rooms_lost: int = 0
    rooms_handed_off: int = 0
    """Rooms given up to a worker with fewer (rebalancing after a worker joined)."""
    rooms_idle: int = 0
    """Rooms given up because their show went quiet for `session_idle_ms` (sessions ended)."""


def encode_event(event: Event) -> str:
    return event.to_line()


def decode_event(raw: bytes | str) -> Event:
    """An entry's ``e`` field back to the Event (the replay-JSONL form keeps received_ts and the hash)."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"bus entry is not JSON: {type(e).__name__}", key="e") from None
    return parse_event(obj, hasher=None, received_ts=0, store_names=True)


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisBus:
    """Publisher and/or worker on Redis Streams (see the module docstring for keys and guarantees)."""

    def __init__(
        self,
        url: str,
        pipeline: Pipeline,
        *,
        role: BusRole | str = BusRole.ALL,
        store: Store | None = None,
        name: str | None = None,
        prefix: str = "livebot:",
        maxlen: int = 100_000,
        lease_ms: int = 10_000,
        claim_idle_ms: int = 30_000,
        read_count: int = 500,
        block_ms: int = 200,
        publish_buffer: int = 10_000,
        session_idle_ms: int = 600_000,
    ) -> None:
        self.role = BusRole(role)
        self.url = url
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._pipeline = pipeline
        self._store = store
        self._prefix = prefix
        self._maxlen = maxlen
        self._lease_ms = lease_ms
        self._claim_idle_ms = claim_idle_ms
        self._read_count = read_count
        self._block_ms = block_ms
        self._publish_buffer = publish_buffer
        self._session_idle_ms = session_idle_ms
        self.stats = RedisBusStats()
        self._redis: aioredis.Redis | None = None
        self._renew: Any = None
        self._release: Any = None
        # publisher
        self._outbox: deque[Event] = deque()
        self._has_outbox = asyncio.Event()
        self._outbox_space = asyncio.Event()
        self._outbox_space.set()
        self._known_rooms: set[str] = set()
        self._publisher: asyncio.Task[None] | None = None
        self._intake_closed = False
        # worker
        self.owned: set[str] = set()
        """Rooms this worker holds the lease of."""
        self._groups: set[str] = set()
        self._claim_now: set[str] = set()
        self._inflight: dict[int, tuple[str, bytes]] = {}
        """id(event) → its entry, from offer() until the pipeline stored the event."""
        self._inflight_msgs: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
        """(room, msg_id) of in-flight events → duplicate entries to acknowledge along with them."""
        self._acks: dict[str, list[bytes]] = {}
        self._draining = False
        self._drain_marks: dict[str, tuple[int, int]] = {}
        self._last_read: dict[str, tuple[int, int]] = {}
        self._sessions_shared: dict[str, str] = {}
        self._worker: asyncio.Task[None] | None = None
        self._leases: asyncio.Task[None] | None = None
        self._handoff: set[str] = set()
        """Owned rooms being handed to a worker with fewer: no longer read, released once stored."""
        self._released: dict[str, float] = {}
        """Room → monotonic time this worker handed it off (not taken back within a lease)."""
        self.on_take: Callable[[str, str | None], object] | None = None
        """Called with (room, session id or None) before a taken room is read: the App restores the room's
        state from a shared store there."""
        self._wake = asyncio.Event()
        self._next_claim = 0.0
        self._logged_down = False
        self._registered = False

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def publishes(self) -> bool:
        return self.role in (BusRole.ALL, BusRole.SOURCES)

    @property
    def consumes(self) -> bool:
        return self.role in (BusRole.ALL, BusRole.WORKER)

    async def start(self) -> None:
        if self._redis is not None:
            raise RuntimeError("This RedisBus is already started")
        self._connect()
        if self.publishes:
            self._publisher = asyncio.create_task(self._publish_loop(), name="bus-publish")
        if self.consumes:
            if self._store is not None:
                self._pipeline.on_stored.append(self._on_done)
            else:
                # No store: an event is done once it is applied to RoomState.
                self._pipeline.hooks.append(lambda batch, _analyses: self._on_done(batch))
            self._leases = asyncio.create_task(self._lease_loop(), name="bus-leases")
            self._worker = asyncio.create_task(self._work_loop(), name="bus-worker")
        log.info("bus=%s worker=%s role=%s started", self._redacted_url(), self.name, self.role)

    def _connect(self) -> None:
        # Lazy: the client connects on its first command, and reconnects by itself after an outage.
        self._redis = aioredis.from_url(self.url, decode_responses=False, socket_connect_timeout=5)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)

    async def stop_intake(self) -> None:
        """Flush what the sources published, then (worker) read the owned rooms up to that point and stop."""
        self._intake_closed = True
        if self._publisher is not None:
            while self._outbox and not self._publisher.done():
                self._outbox_space.clear()
                await self._outbox_space.wait()
            await self._cancel(self._publisher)
            self._publisher = None
        if self._worker is not None:
            await self._mark_drain()
            self._draining = True
            self._wake.set()
            try:
                await self._worker
            finally:
                self._worker = None

    async def close(self) -> None:
        """After the pipeline drained: acknowledge what it stored, release the rooms, disconnect."""
        if self._redis is None:
            return
        if self._leases is not None:
            await self._cancel(self._leases)
            self._leases = None
        try:
            await self._flush_acks()
            await self._leave()
        except RedisError as e:
            log.warning("bus=%s could not acknowledge or release on close (%s); pending entries will be "
                        "claimed by the next owner", self._redacted_url(), e)
        finally:
            await self._redis.aclose()
            self._redis = None
        log.info("bus worker=%s closed: %s", self.name, self.status())

    async def abort(self) -> None:
        """Stop at once without acknowledging or releasing anything: what a crash leaves behind."""
        for task in (self._publisher, self._worker, self._leases):
            if task is not None:
                await self._cancel(task)
        self._publisher = self._worker = self._leases = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def owns(self, room: str) -> bool:
        """This process analyses `room` now (holds its lease and is not handing it off)."""
        return room in self.owned and room not in self._handoff

    def status(self) -> dict[str, Any]:
        return {"kind": "redis", "worker": self.name, "role": str(self.role), "rooms": sorted(self.owned),
                **asdict(self.stats)}

    @staticmethod
    async def _cancel(task: asyncio.Task[None]) -> None:
        # A CancelledError landing inside a redis-py command can be swallowed there (the connection is
        # dropped and the loop goes on), so cancel again until the task has really ended.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        if not task.cancelled() and task.exception() is not None:
            log.error("bus task %s failed", task.get_name(), exc_info=task.exception())

    def _redacted_url(self) -> str:
        # Never log a password that may sit in the URL.
        head, sep, tail = self.url.rpartition("@")
        return f"{self.url.split('://')[0]}://***@{tail}" if sep else self.url

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self._prefix}{kind}:{name}" if name else f"{self._prefix}{kind}"

    def stream(self, room: str) -> str:
        return self._key("events", room)

    def _room_of(self, stream: bytes | str) -> str:
        s = stream.decode() if isinstance(stream, bytes) else stream
        head = f"{self._prefix}events:"
        return s[len(head) :] if s.startswith(head) else s

    @property
    def _r(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisBus is not started")
        return self._redis

    # -- publishing ---------------------------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Queue one event for XADD; waits (counted) only when `publish_buffer` events are queued."""
        if self._intake_closed:
            raise RuntimeError("The bus is stopping; sources must stop before it")
        if not self.publishes:
            raise RuntimeError(f"A bus with role {self.role} does not publish")
        while len(self._outbox) >= self._publish_buffer:
            self.stats.publish_waits += 1
            self._outbox_space.clear()
            await self._outbox_space.wait()
        self._outbox.append(event)
        self._has_outbox.set()

    async def _publish_loop(self) -> None:
        policy = ReconnectPolicy(base_s=0.2, max_s=5.0)
        while True:
            await self._has_outbox.wait()
            batch = [self._outbox[i] for i in range(min(PUBLISH_BATCH, len(self._outbox)))]
            try:
                await self._xadd(batch)
            except RedisError as e:
                # Keep the batch: it is sent again (entries that did go through become duplicates,
                # dropped downstream by msg_id).
                self._redis_down(e)
                await asyncio.sleep(policy.next_delay())
                continue
            policy.reset()
            self._redis_up()
            for _ in batch:
                self._outbox.popleft()
            self.stats.published += len(batch)
            if not self._outbox:
                self._has_outbox.clear()
            self._outbox_space.set()

    async def _xadd(self, batch: list[Event]) -> None:
        pipe = self._r.pipeline(transaction=False)
        new_rooms = {ev.room for ev in batch} - self._known_rooms
        if new_rooms:
            pipe.sadd(self._key("rooms"), *sorted(new_rooms))
        for ev in batch:
            pipe.xadd(self.stream(ev.room), {"e": encode_event(ev)}, maxlen=self._maxlen, approximate=True)
        await pipe.execute()
        self._known_rooms |= new_rooms

    # -- consuming ----------------------------------------------------------------------------------

    async def _work_loop(self) -> None:
        policy = ReconnectPolicy(base_s=0.2, max_s=5.0)
        while True:
            try:
                if self._claim_now or monotonic() >= self._next_claim:
                    await self._claim_pending()
                    self._next_claim = monotonic() + self._claim_idle_ms / 2000
                await self._flush_acks()
                await self._share_sessions()
                read = await self._read()
                policy.reset()
                self._redis_up()
                if self._draining and not read:
                    return
            except ResponseError as e:
                if "NOGROUP" in str(e):
                    self._groups.clear()  # the stream or group went away (FLUSHALL?): create it again
                    await self._ensure_groups(self.owned)
                    continue
                self._redis_down(e)
                await self._pause(policy.next_delay())
            except RedisError as e:
                self._redis_down(e)
                if self._draining:
                    log.warning("bus=%s down while draining; unread entries stay in Redis for the next owner",
                                self._redacted_url())
                    return
                await self._pause(policy.next_delay())

    async def _lease_loop(self) -> None:
        """Heartbeat, leases and room taking on their own beat, so a long read never lets a lease lapse."""
        while True:
            try:
                await self._maintain()
            except RedisError as e:
                self._redis_down(e)
            await asyncio.sleep(self._lease_ms / 3000)

    async def _pause(self, seconds: float) -> None:
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _maintain(self) -> None:
        """Heartbeat, renew the leases held, take a fair share of the unowned rooms, publish sessions."""
        r = self._r
        await r.set(self._key("worker", self.name), b"1", px=self._lease_ms)
        if not self._registered:
            # Take rooms from the next round on: workers starting together then all count each other.
            self._registered = True
            return
        for room in sorted(self.owned):
            if not await self._renew(keys=[self._key("owner", room)], args=[self.name, self._lease_ms]):
                self.owned.discard(room)
                self.stats.rooms_lost += 1
                log.warning("room=%s lease lost to another worker; it continues the room", room)
        self._sessions_shared.clear()  # refresh every session key's expiry below
        await self._share_sessions()
        if self._draining:
            return
        members: Any = await r.smembers(self._key("rooms"))
        rooms = sorted(_text(m) for m in members)
        if not rooms:
            return
        workers = 0
        async for _ in r.scan_iter(match=self._key("worker", "*"), count=100):
            workers += 1
        active, now_ms = await self._active_rooms(rooms)
        await self._release_idle(active, now_ms)
        fair = -(-len(active) // max(1, workers))
        await self._rebalance(fair)
        now = monotonic()
        # Each worker tries rooms in its own order, so workers starting together spread out.
        for room in sorted(active, key=self._preference):
            if len(self.owned) >= fair:
                break
            if room in self.owned or now - self._released.get(room, -1e18) < self._lease_ms / 1000:
                continue
            if await r.set(self._key("owner", room), self.name, nx=True, px=self._lease_ms):
                await self._take(room)

    async def _active_rooms(self, rooms: list[str]) -> tuple[set[str], int]:
        """Rooms worth a worker: an event within `session_idle_ms`, or entries not yet read or acknowledged.

        A room whose show ended long ago stays in the `rooms` set (a new event makes it active again) but
        neither counts in the fair share nor holds a lease.
        """
        r = self._r
        sec, usec = await r.time()
        now_ms = int(sec) * 1000 + int(usec) // 1000
        horizon = now_ms - self._session_idle_ms
        pipe = r.pipeline(transaction=False)
        for room in rooms:
            pipe.xrevrange(self.stream(room), count=1)
            pipe.xinfo_groups(self.stream(room))
        replies = await pipe.execute(raise_on_error=False)
        active: set[str] = set()
        for i, room in enumerate(rooms):
            last, groups = replies[2 * i], replies[2 * i + 1]
            if isinstance(last, Exception) or not last:
                continue  # no stream (yet), or empty
            last_id = _id_key(last[0][0])
            if last_id[0] >= horizon:
                active.add(room)
                continue
            group = None if isinstance(groups, Exception) else next(
                (g for g in groups if _text(g.get("name", b"")) == GROUP), None)
            delivered = _id_key(group["last-delivered-id"]) if group is not None else (0, 0)
            if group is None or int(group.get("pending", 0)) > 0 or delivered < last_id:
                active.add(room)  # unread or unacknowledged entries: someone must finish them
        return active, now_ms

    async def _release_idle(self, active: set[str], now_ms: int) -> None:
        """Give up owned rooms that went quiet (nothing in flight either) and end their sessions: a room
        idle for `session_idle_ms` has ended its show; its next event starts a new session."""
        for room in sorted(self.owned - active - self._handoff):
            if not await self._give_up(room):
                continue
            await self._r.delete(self._key("session", room))
            self._sessions_shared.pop(room, None)
            sid = self._pipeline.sessions.get(room)
            state = self._pipeline.states.get(room)
            if self._store is not None and sid is not None:
                ended = state.totals.last_ms if state is not None and state.totals.last_ms else now_ms
                try:
                    self._store.end_session(sid, ended, {"ended_by": "idle"})
                except Exception:
                    log.exception("room=%s could not end idle session %s", room, sid)
            self._pipeline.forget_room(room)
            self.stats.rooms_idle += 1
            log.info("room=%s idle for %.0f s: released by worker %s, session %s ended", room,
                     self._session_idle_ms / 1000, self.name, sid)

    async def _give_up(self, room: str) -> bool:
        """Release an owned room's lease once nothing read from it is still being analysed or stored
        (acknowledging what was); False = not yet, try again on a later round."""
        stream = self.stream(room)
        if any(key == stream for key, _ in self._inflight.values()):
            return False
        await self._flush_acks()
        await self._release(keys=[self._key("owner", room)], args=[self.name])
        self.owned.discard(room)
        return True

    def _preference(self, room: str) -> int:
        return zlib.crc32(f"{self.name}/{room}".encode())

    async def _rebalance(self, fair: int) -> None:
        """Hand rooms above the fair share to workers with fewer (one joined): stop reading them, and
        release each lease once every event read from it is stored and acknowledged. The taker claims
        nothing then, reads on from the group's position and continues the session."""
        excess = len(self.owned) - len(self._handoff) - fair
        if excess > 0:
            for room in sorted(self.owned - self._handoff, key=self._preference, reverse=True)[:excess]:
                self._handoff.add(room)
                log.info("room=%s handing off: worker %s holds more than its fair share (%d)",
                         room, self.name, fair)
        for room in sorted(self._handoff):
            if not await self._give_up(room):
                continue
            self._handoff.discard(room)
            self._released[room] = monotonic()
            self._pipeline.forget_room(room)
            self.stats.rooms_handed_off += 1
            log.info("room=%s handed off by worker %s", room, self.name)

    async def _take(self, room: str) -> None:
        await self._ensure_groups({room})
        if room not in self._pipeline.sessions and room not in self._pipeline.session_ids:
            sid: Any = await self._r.get(self._key("session", room))
            if sid is not None:
                self._pipeline.session_ids[room] = _text(sid)
        if self.on_take is not None:
            try:
                self.on_take(room, self._pipeline.sessions.get(room) or self._pipeline.session_ids.get(room))
            except Exception:
                log.exception("room=%s restoring the taken room failed; it starts from its new events", room)
        self.owned.add(room)
        self._claim_now.add(room)
        self._wake.set()
        self.stats.rooms_taken += 1
        log.info("room=%s taken by worker %s", room, self.name)

    async def _ensure_groups(self, rooms: set[str]) -> None:
        for room in rooms - self._groups:
            try:
                await self._r.xgroup_create(self.stream(room), GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
            self._groups.add(room)

    async def _claim_pending(self) -> None:
        """Claim entries pending too long (just-taken rooms: all of them, their owner is gone)."""
        for room in sorted(self.owned - self._handoff):
            min_idle = 0 if room in self._claim_now else self._claim_idle_ms
            cursor: bytes | str = "0-0"
            while True:
                reply = await self._r.xautoclaim(
                    self.stream(room), GROUP, self.name, min_idle, start_id=cursor, count=self._read_count
                )
                cursor, entries = reply[0], reply[1]
                deleted = reply[2] if len(reply) > 2 else []
                if deleted:
                    self.stats.trimmed += len(deleted)
                    log.error("room=%s %d pending events were trimmed by MAXLEN before they were stored "
                              "(raise maxlen)", room, len(deleted))
                if entries:
                    self.stats.claimed += len(entries)
                    await self._handle(self.stream(room), entries, claimed=True)
                if cursor in (b"0-0", "0-0"):
                    break
            self._claim_now.discard(room)

    async def _mark_drain(self) -> None:
        """Remember each owned stream's last entry: draining reads up to there, not forever."""
        if self._redis is None:
            return
        try:
            for room in sorted(self.owned):  # a copy: the lease loop may change it while we await
                last: Any = await self._r.xrevrange(self.stream(room), count=1)
                if last:
                    self._drain_marks[room] = _id_key(last[0][0])
        except RedisError as e:
            self._redis_down(e)

    async def _read(self) -> bool:
        """One XREADGROUP over the owned rooms; True when it brought entries to handle."""
        rooms = sorted(room for room in self.owned - self._handoff if not self._drained(room))
        if not rooms:
            if not self._draining:
                await self._pause(self._lease_ms / 3000)
            return False
        reply: Any = await self._r.xreadgroup(
            GROUP, self.name, {self.stream(room): ">" for room in rooms}, count=self._read_count,
            block=None if self._draining else self._block_ms,
        )
        got = False
        for stream, entries in reply or []:
            if entries:
                got = True
                await self._handle(stream, entries, claimed=False)
        return got

    def _drained(self, room: str) -> bool:
        mark = self._drain_marks.get(room)
        return self._draining and (mark is None or self._last_read.get(room, (0, 0)) >= mark)

    async def _handle(self, stream: bytes | str, entries: list[Any], *, claimed: bool) -> None:
        key = stream.decode() if isinstance(stream, bytes) else stream
        room = self._room_of(key)
        decoded: list[tuple[bytes, Event]] = []
        for entry_id, fields in entries:
            if fields is None:  # deleted (trimmed) while pending
                self._ack(key, entry_id)
                continue
            self._last_read[room] = max(self._last_read.get(room, (0, 0)), _id_key(entry_id))
            try:
                decoded.append((entry_id, decode_event(fields[b"e"])))
            except (KeyError, ProtocolError, UnicodeDecodeError) as e:
                if self.stats.bad_entries == 0:
                    log.warning("room=%s bus entry %s skipped: %s", room, entry_id, e)
                self.stats.bad_entries += 1
                self._ack(key, entry_id)
        if claimed and decoded:
            stored = self._stored_msg_ids(room, [ev.msg_id for _, ev in decoded if ev.msg_id is not None])
            for entry_id, ev in decoded:
                if ev.msg_id is not None and ev.msg_id in stored:
                    self.stats.duplicates += 1
                    self._ack(key, entry_id)
            decoded = [(i, ev) for i, ev in decoded if ev.msg_id is None or ev.msg_id not in stored]
        for entry_id, ev in decoded:
            self.stats.consumed += 1
            if await self._pipeline.offer(ev):
                self._inflight[id(ev)] = (key, entry_id)
                if ev.msg_id is not None:
                    self._inflight_msgs[(room, ev.msg_id)] = []
                continue
            self.stats.duplicates += 1
            twins = self._inflight_msgs.get((room, ev.msg_id or ""))
            if twins is not None:
                twins.append((key, entry_id))  # acknowledged with the original, once that is stored
            else:
                self._ack(key, entry_id)

    def _stored_msg_ids(self, room: str, msg_ids: list[str]) -> set[str]:
        """Which of these msg_ids the room's session already holds (claimed entries only: rare, small)."""
        sid = self._pipeline.sessions.get(room) or self._pipeline.session_ids.get(room)
        if self._store is None or sid is None or not msg_ids:
            return set()
        found: set[str] = set()
        for i in range(0, len(msg_ids), 500):
            chunk = msg_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._store.execute(
                f"SELECT msg_id FROM events WHERE session_id = ? AND msg_id IN ({marks})", [sid, *chunk]
            )
            found.update(str(r[0]) for r in rows)
        return found

    async def _share_sessions(self) -> None:
        """Put each owned room's session id in Redis once the pipeline made it (a takeover continues it)."""
        for room in sorted(self.owned):
            sid = self._pipeline.sessions.get(room)
            if sid is not None and self._sessions_shared.get(room) != sid:
                await self._r.set(self._key("session", room), sid, px=self._session_idle_ms)
                self._sessions_shared[room] = sid

    def _on_done(self, events: Any) -> None:
        for ev in events:
            where = self._inflight.pop(id(ev), None)
            if where is None:
                continue
            self._ack(*where)
            if ev.msg_id is not None:
                for twin in self._inflight_msgs.pop((ev.room, ev.msg_id), ()):
                    self._ack(*twin)

    def _ack(self, stream: str, entry_id: bytes) -> None:
        self._acks.setdefault(stream, []).append(entry_id)

    async def _flush_acks(self) -> None:
        if not self._acks:
            return
        acks, self._acks = self._acks, {}
        try:
            pipe = self._r.pipeline(transaction=False)
            for stream, ids in acks.items():
                pipe.xack(stream, GROUP, *ids)
            await pipe.execute()
        except RedisError:
            for stream, ids in acks.items():
                self._acks.setdefault(stream, []).extend(ids)
            raise
        self.stats.acked += sum(len(ids) for ids in acks.values())

    async def _leave(self) -> None:
        """Release the leases and the heartbeat; the last live worker also ends the rooms' sessions."""
        r = self._r
        for room in sorted(self.owned):
            await self._release(keys=[self._key("owner", room)], args=[self.name])
        await r.delete(self._key("worker", self.name))
        others = 0
        async for _ in r.scan_iter(match=self._key("worker", "*"), count=100):
            others += 1
        if not others and self.owned:
            await r.delete(*(self._key("session", room) for room in self.owned))
        self.owned.clear()

    def _redis_down(self, e: Exception) -> None:
        self.stats.redis_errors += 1
        if not self._logged_down:
            self._logged_down = True
            log.warning("bus=%s unavailable (%s); retrying with backoff, nothing is dropped",
                        self._redacted_url(), e)

    def _redis_up(self) -> None:
        if self._logged_down:
            self._logged_down = False
            log.info("bus=%s reachable again", self._redacted_url())
