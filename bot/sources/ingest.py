"""Routes events pushed to the one generic ingest listener to livebot rooms by their `platform:room` key.

One `GenericIngestServer` serves the whole process (config `[ingest]`); every pushed event names its own
platform and room. A livebot room claims events with a source `kind = "generic"` and `match` keys such as
`"kuaishou:3x9demo"` (exact) or `"kuaishou:*"` (any room of that platform; an exact key wins). Events no
room claims are counted per key and logged once per key, then dropped: an adapter pointed at the wrong
room must be visible, but must not flood the log.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace

from bot.events import Event
from bot.sources.base import Emit, room_logger
from bot.sources.generic_ws import ANY_ROOM, GENERIC_PLATFORM, GenericIngestServer

logger = logging.getLogger(__name__)

WILDCARD = "*"
MAX_TRACKED_KEYS = 1000
"""Distinct unmatched keys counted one by one; beyond this they share `OTHER_KEY` (a pusher can invent
any number of room names, memory must stay bounded)."""
OTHER_KEY = "<other>"


class IngestRouter:
    """A Source around a GenericIngestServer that hands each pushed event to the room claiming it.

    Args:
        routes: `"platform:room"` or `"platform:*"` → livebot room name. The event keeps its platform and
            takes the livebot room name as its room.
    """

    def __init__(self, server: GenericIngestServer, routes: Mapping[str, str]) -> None:
        self.server = server
        self.status = server.status
        self._exact: dict[str, str] = {}
        self._any_room: dict[str, str] = {}
        for key, room in routes.items():
            platform, _, upstream_room = key.partition(":")
            if not platform or not upstream_room:
                raise ValueError(f'route keys read "platform:room", got {key!r}')
            if upstream_room == WILDCARD:
                self._any_room[platform] = room
            else:
                self._exact[key] = room
        # A room fed by several upstream rooms of one platform could see the same message id from two of
        # them; the pipeline drops duplicates by (platform, room, id), so those ids get the upstream room
        # as a prefix.
        per_room: Counter[tuple[str, str]] = Counter()
        for key, room in routes.items():
            platform, _, upstream_room = key.partition(":")
            per_room[(platform, room)] += 2 if upstream_room == WILDCARD else 1
        self._shared = {pr for pr, n in per_room.items() if n > 1}
        self.routed: Counter[str] = Counter()
        """Events handed on, per livebot room."""
        self.unmatched: Counter[str] = Counter()
        """Events no room claims, per `platform:room` key (at most MAX_TRACKED_KEYS keys + OTHER_KEY)."""
        self._log = room_logger(logger, room=ANY_ROOM, platform=GENERIC_PLATFORM)

    @property
    def rooms(self) -> set[str]:
        """Livebot rooms that take events from the listener."""
        return set(self._exact.values()) | set(self._any_room.values())

    @property
    def running(self) -> bool:
        return self.server.running

    def route(self, event: Event) -> Event | None:
        """The event as its livebot room sees it, or None (counted) when no room claims it."""
        key = f"{event.platform}:{event.room}"
        room = self._exact.get(key) or self._any_room.get(event.platform)
        if room is None:
            self._unmatched(key)
            return None
        self.routed[room] += 1
        if room == event.room:
            return event
        msg_id = event.msg_id
        if msg_id is not None and (event.platform, room) in self._shared:
            msg_id = f"{event.room}/{msg_id}"
        return replace(event, room=room, msg_id=msg_id)

    def _unmatched(self, key: str) -> None:
        if key not in self.unmatched and len(self.unmatched) >= MAX_TRACKED_KEYS:
            key = OTHER_KEY
        first = key not in self.unmatched
        self.unmatched[key] += 1
        if first:
            self._log.warning(
                "no room takes pushed events of %r (add it to a room's generic source `match`); "
                "they are counted and dropped",
                key,
            )

    async def run(self, emit: Emit) -> None:
        """Listen until stop(), handing routed events to `emit`."""

        async def routed(event: Event) -> None:
            out = self.route(event)
            if out is not None:
                await emit(out)

        await self.server.run(routed)

    def stop(self) -> None:
        self.server.stop()
