"""AlertSink: the chat-alert sink (outbox first, then one sender task per robot) and `send_test`."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from bot.advisors.base import Suggestion, SuggestionKind
from bot.clock import Clock, SystemClock, monotonic
from bot.outputs.alerts.config import AlertsConfig, RobotConfig, load_timezone
from bot.outputs.alerts.outbox import DeliveryState, Outbox
from bot.outputs.alerts.robots import (
    AiohttpTransport,
    RenderContext,
    Transport,
    TransportError,
    build_request,
    classify_answer,
    render_test,
    scrubber,
)
from bot.outputs.alerts.routing import AlertRouter, IsLive
from bot.outputs.alerts.sender import Backoff, RobotSender

logger = logging.getLogger(__name__)

OUTBOX_RETENTION_MS = 7 * 24 * 3600 * 1000
"""Finished alerts older than this are pruned from the outbox on start."""


def resolve_outbox_path(cfg: AlertsConfig, store_path: str | Path) -> Path:
    """`alerts.outbox`, or the store's SQLite file when unset (the outbox has its own tables there)."""
    return Path(cfg.outbox) if cfg.outbox else Path(store_path)


class SinkState(StrEnum):
    NEW = "new"  # built, start() not called
    RUNNING = "running"  # senders are delivering
    STOPPED = "stopped"  # stop() finished; build a new sink to run again


class AlertSink:
    """Stores every alert in the outbox, then delivers it to each routed robot.

    `send()` only writes the outbox and wakes the robots' senders, so a slow or dead robot never blocks the
    dispatcher. Non-alert suggestions are taken only when a robot lists their kind in `rules`.
    """

    name = "alerts"

    def __init__(
        self,
        cfg: AlertsConfig,
        *,
        outbox_path: str | Path,
        clock: Clock | None = None,
        is_live: IsLive | None = None,
        transport: Transport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._cfg = cfg
        self._clock: Clock = clock or SystemClock()
        self._warn_no_live = is_live is None and bool(cfg.quiet_hours or cfg.rooms)
        # Without a liveness signal every room counts as live: quiet hours must never silence a live room.
        self._router = AlertRouter(cfg, is_live=is_live or (lambda room: True))
        self._transport = transport
        self._session: aiohttp.ClientSession | None = None
        self._rng = rng or random.Random()
        self._ctx = RenderContext(tz=load_timezone(cfg.timezone), screen_url=cfg.screen_url)
        self._backoff = Backoff(base_s=cfg.retry_base_s, max_s=cfg.retry_max_s)
        self.outbox = Outbox(outbox_path)
        self._senders: dict[str, RobotSender] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._state = SinkState.NEW

    # -- lifecycle

    @property
    def state(self) -> SinkState:
        return self._state

    @property
    def running(self) -> bool:
        return self._state is SinkState.RUNNING

    async def start(self) -> None:
        if self._state is SinkState.RUNNING:
            raise RuntimeError("AlertSink is already running")
        if self._state is SinkState.STOPPED:
            raise RuntimeError("AlertSink cannot be restarted after stop(); build a new one")
        self.outbox.open()
        try:
            now = self._clock.now_ms()
            self.outbox.prune(now - OUTBOX_RETENTION_MS)
            if self._transport is None:
                self._session = aiohttp.ClientSession()
                self._transport = AiohttpTransport(self._session, self._cfg.request_timeout_s)
            for robot in self._cfg.robots:
                sender = RobotSender(
                    robot,
                    outbox=self.outbox,
                    transport=self._transport,
                    clock=self._clock,
                    ctx=self._ctx,
                    backoff=self._backoff,
                    rng=self._rng,
                )
                sender.seed(now)
                self._senders[robot.name] = sender
        except BaseException:
            await self._close_resources()
            raise
        for name, sender in self._senders.items():
            self._tasks[name] = asyncio.create_task(self._guard(sender), name=f"alerts:{name}")
        self._state = SinkState.RUNNING
        pending = self.outbox.counts()[DeliveryState.PENDING]
        logger.info("alerts: %d robot(s), %d delivery(ies) pending from before", len(self._senders), pending)
        for name, n in self.outbox.pending_robots().items():
            if name not in self._senders:
                logger.warning(
                    "robot=%s is not configured any more; its %d pending alert(s) stay unsent",
                    name,
                    n,
                )
        if self._warn_no_live:
            logger.warning(
                "alerts: quiet hours are set but no liveness signal was given; every room counts as live"
            )

    async def stop(self, *, flush: bool = True) -> None:
        """Stop the senders; with `flush`, first deliver what can go out within `alerts.flush_timeout_s`.

        Whatever is left stays in the outbox and is sent by the next start. `flush=False` behaves like a
        killed process (requests in flight are abandoned and resent later).
        """
        if self._state is not SinkState.RUNNING:
            return
        self._state = SinkState.STOPPED
        if flush:
            for sender in self._senders.values():
                sender.request_stop()
            try:
                async with asyncio.timeout(self._cfg.flush_timeout_s):
                    await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            except TimeoutError:
                logger.warning("alerts: flush timed out after %.1fs", self._cfg.flush_timeout_s)
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        pending = self.outbox.counts()[DeliveryState.PENDING]
        if pending:
            logger.info("alerts: stopped with %d delivery(ies) pending; the next start sends them", pending)
        await self._close_resources()

    async def _close_resources(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.outbox.close()

    async def __aenter__(self) -> AlertSink:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _guard(self, sender: RobotSender) -> None:
        """Outermost wrapper of a sender task: an unexpected error is logged and the loop restarts.

        The outbox is the truth, so restarting the loop is always safe.
        """
        crashes = 0
        while True:
            try:
                await sender.run()
                return
            except Exception:
                crashes += 1
                delay = min(60.0, 2.0**crashes)
                logger.exception("robot=%s sender failed; restarting it in %.0fs", sender.robot.name, delay)
                if self._state is not SinkState.RUNNING:
                    return
                await sender.pause(delay)

    # -- input

    async def send(self, suggestion: Suggestion) -> None:
        """Store `suggestion` in the outbox (alerts always, others if a robot takes them); wake senders."""
        if self._state is not SinkState.RUNNING:
            raise RuntimeError(f"AlertSink is {self._state.value}; call start() before send()")
        now = self._clock.now_ms()
        route = self._router.route(suggestion, now)
        if suggestion.kind is not SuggestionKind.ALERT and route.skipped == "not_routed":
            return
        failed = {
            name: f"robot disabled: {self._senders[name].disabled}"
            for name in route.robots
            if self._senders[name].disabled is not None
        }
        woken = self.outbox.enqueue(suggestion, route.robots, now, failed=failed)
        for name in woken:
            self._senders[name].wake()
        if route.skipped:
            logger.debug("room=%s alert #%s not sent: %s", suggestion.room, suggestion.id, route.skipped)

    # -- introspection

    async def wait_idle(self, timeout_s: float = 5.0) -> None:
        """Wait until every sender has nothing due (for tests and replay, which drive a ManualClock)."""
        deadline = monotonic() + timeout_s
        while not all(
            s.idle or name not in self._tasks or self._tasks[name].done() for name, s in self._senders.items()
        ):
            if monotonic() > deadline:
                busy = [n for n, s in self._senders.items() if not s.idle]
                raise TimeoutError(f"alert senders still busy after {timeout_s}s: {', '.join(busy)}")
            await asyncio.sleep(0.002)

    def status(self) -> dict[str, Any]:
        """Per-robot counters for the control screen and logs."""
        out: dict[str, Any] = {}
        for name, sender in self._senders.items():
            counts = self.outbox.counts(name) if self.outbox.is_open else {}
            out[name] = {
                "kind": str(sender.robot.kind),
                "disabled": sender.disabled,
                "requests": sender.stats.requests,
                "messages_sent": sender.stats.messages_sent,
                "alerts_sent": sender.stats.alerts_sent,
                "digests_sent": sender.stats.digests_sent,
                "retries": sender.stats.retries,
                "pending": counts.get(DeliveryState.PENDING, 0),
                "failed": counts.get(DeliveryState.FAILED_PERMANENT, 0),
            }
        return out


async def send_test(
    robots: Sequence[RobotConfig],
    *,
    screen_url: str = "",
    timezone: str = "Asia/Shanghai",
    clock: Clock | None = None,
    transport: Transport | None = None,
    timeout_s: float = 10.0,
) -> list[tuple[str, bool, str]]:
    """Send one test message to each robot (no outbox, one attempt); (robot name, ok, detail) per robot.

    `detail` is "ok" or the platform's code and message (or the network error), with no URL key or secret.
    """
    clock = clock or SystemClock()
    ctx = RenderContext(tz=load_timezone(timezone), screen_url=screen_url)
    session: aiohttp.ClientSession | None = None
    if transport is None:
        session = aiohttp.ClientSession()
        transport = AiohttpTransport(session, timeout_s)
    used: Transport = transport

    async def one(robot: RobotConfig) -> tuple[str, bool, str]:
        scrub = scrubber(robot)
        now = clock.now_ms()
        request = build_request(robot, render_test(robot, ctx, now).payload, now)
        try:
            response = await used.post(request)
        except TransportError as exc:
            return robot.name, False, scrub(f"network error: {exc}")
        outcome = classify_answer(robot.kind, response.status, response.headers, response.text)
        return robot.name, outcome.ok, scrub(outcome.describe())

    try:
        return list(await asyncio.gather(*(one(r) for r in robots)))
    finally:
        if session is not None:
            await session.close()
