"""Which robots get a suggestion: per-room rules, minimum severity and quiet hours (never for a live room)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bot.advisors.base import SEVERITY_ORDER, Suggestion, SuggestionKind
from bot.outputs.alerts.config import AlertsConfig, load_timezone, parse_quiet_hours
from bot.outputs.alerts.robots import routing_key

IsLive = Callable[[str], bool]
"""room → is it broadcasting right now (RoomState knows; sources report live_start/live_end)."""


@dataclass(frozen=True, slots=True)
class Route:
    """The robots a suggestion goes to, or why it goes nowhere."""

    robots: tuple[str, ...]
    skipped: str | None = None
    """'quiet_hours', 'not_routed' (no robot takes this rule/room/severity) or None."""


def in_window(minute_of_day: int, window: tuple[int, int]) -> bool:
    """Is the minute inside [start, end)? Windows may wrap midnight ("23:30-08:00")."""
    start, end = window
    if start < end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end


class AlertRouter:
    """Pure routing decisions; the only input besides the config is the `is_live` callback and `now`."""

    def __init__(self, cfg: AlertsConfig, *, is_live: IsLive) -> None:
        self._cfg = cfg
        self._is_live = is_live
        self._tz = load_timezone(cfg.timezone)
        self._quiet = parse_quiet_hours(cfg.quiet_hours)
        self._room_quiet = {
            room: parse_quiet_hours(o.quiet_hours)
            for room, o in cfg.rooms.items()
            if o.quiet_hours is not None
        }

    def quiet_window(self, room: str) -> tuple[int, int] | None:
        return self._room_quiet[room] if room in self._room_quiet else self._quiet

    def is_quiet(self, room: str, now_ms: int) -> bool:
        """Quiet hours apply to this room now, and it is not live."""
        window = self.quiet_window(room)
        if window is None:
            return False
        local = datetime.fromtimestamp(now_ms / 1000, self._tz)
        if not in_window(local.hour * 60 + local.minute, window):
            return False
        return not self._is_live(room)

    def route(self, s: Suggestion, now_ms: int) -> Route:
        is_alert = s.kind is SuggestionKind.ALERT
        key = routing_key(s)
        override = self._cfg.rooms.get(s.room)
        room_min = override.min_severity if override else None
        allowed = set(override.robots) if override and override.robots is not None else None
        robots = tuple(
            r.name
            for r in self._cfg.robots
            if r.serves(s.room)
            and (allowed is None or r.name in allowed)
            and r.wants(key, is_alert=is_alert)
            and SEVERITY_ORDER[s.severity] >= SEVERITY_ORDER[r.min_severity]
            and (room_min is None or SEVERITY_ORDER[s.severity] >= SEVERITY_ORDER[room_min])
        )
        if not robots:
            return Route((), "not_routed")
        if self.is_quiet(s.room, now_ms):
            return Route((), "quiet_hours")
        return Route(robots)
