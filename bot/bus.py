"""The seam between sources and analysis: where an Event goes after a source emits it.

In one process (the default) a source's emit is the pipeline's `submit`: `LocalBus`. Past one
machine, `bot.bus_redis.RedisBus` puts Redis Streams between them (DESIGN.md *Growing past one
machine*): sources publish Events to a stream per room, workers consume them in a consumer group and
feed their own pipeline, so a room's RoomState lives with the worker that owns the room.

Lifecycle, in the App's shutdown order:

    start() → [sources run, emitting through publish()] → sources stop → stop_intake()
    → pipeline drains → close()

`stop_intake()` flushes what was published and stops taking events in; `close()` runs after the
pipeline has stored everything, so a bus that acknowledges (Redis) acknowledges only stored events.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from bot.errors import ConfigError

if TYPE_CHECKING:
    from bot.config import BusConfig
    from bot.events import Event
    from bot.outputs.store import Store
    from bot.pipeline import Pipeline


class BusRole(StrEnum):
    """What this process does on a shared bus."""

    ALL = "all"  # run the configured sources and analyse rooms
    SOURCES = "sources"  # only publish: run the configured sources, analyse nothing
    WORKER = "worker"  # only consume: own rooms from the bus, run no sources


class Bus(Protocol):
    role: BusRole

    async def start(self) -> None:
        """Connect and start consuming (worker roles)."""
        ...

    async def publish(self, event: Event) -> None:
        """The Emit of every source; may wait when the bus is full (counted), never drops."""
        ...

    async def stop_intake(self) -> None:
        """Sources have stopped: flush what they published and stop feeding the pipeline."""
        ...

    async def close(self) -> None:
        """The pipeline has drained: acknowledge what it stored, give up rooms, disconnect."""
        ...

    def owns(self, room: str) -> bool:
        """Whether this process analyses `room` now (its advisors tick only then)."""
        ...

    def status(self) -> dict[str, Any]:
        """Counters for logs and the session summary."""
        ...


class LocalBus:
    """The in-process default: publish is the pipeline's submit; nothing to start or flush."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.role = BusRole.ALL
        self._pipeline = pipeline

    async def start(self) -> None:
        return None

    def owns(self, room: str) -> bool:
        """One process analyses every room."""
        return True

    async def publish(self, event: Event) -> None:
        await self._pipeline.submit(event)

    async def stop_intake(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"kind": "local"}


def make_bus(
    url: str | None, pipeline: Pipeline, *, role: BusRole | str = BusRole.ALL, store: Store | None = None,
    settings: BusConfig | None = None,
) -> Bus:
    """`None`/"" = the in-process queue; `redis://HOST:PORT/DB` (or rediss://, unix://) = Redis Streams.

    `settings` ([bus] in the config) gives the Redis key prefix, stream cap, lease and claim times.
    Raises ConfigError for an unknown scheme or a role the in-process queue cannot play.
    """
    role = BusRole(role)
    if not url or url == "local":
        if role is not BusRole.ALL:
            raise ConfigError(f"role {role} needs a shared bus (--bus or bus.url = redis://HOST:PORT)",
                              key="bus.role")
        return LocalBus(pipeline)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from bot.bus_redis import RedisBus

        extra: dict[str, Any] = {}
        if settings is not None:
            extra = {"prefix": settings.prefix, "maxlen": settings.maxlen, "lease_ms": settings.lease_ms,
                     "claim_idle_ms": settings.claim_idle_ms}
        return RedisBus(url, pipeline, role=role, store=store, **extra)
    raise ConfigError(f"unsupported bus {url!r}: use redis://HOST:PORT[/DB]", key="bus.url")
