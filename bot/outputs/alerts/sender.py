"""Per-robot delivery: sliding-window rate limits, backoff with jitter, permanent-error handling, digests.

One `RobotSender` per robot runs as one task and is the only writer of that robot's delivery rows, so
ordering is simply "oldest pending first". Rules (spec ../shared/protocols/chat_alerts.md §6):

- pace below the platform limit (WeCom/DingTalk 20 per 60 s; Feishu 5 per 1 s and 100 per 60 s);
- when more alerts wait than the rate window admits right now, fold them into one digest instead of
  queueing minutes of stale messages (a 50-alert outage backlog becomes one or two messages);
- network errors, 429/5xx and platform rate-limit codes retry forever with capped exponential backoff, so an
  outage loses nothing; configuration errors (bad signature, keyword, IP, key) stop the robot after one
  request and one ERROR line; a clock-skew answer is retried once first.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from bot.clock import Clock
from bot.outputs.alerts.config import RobotConfig, RobotKind
from bot.outputs.alerts.outbox import Delivery, Outbox
from bot.outputs.alerts.robots import (
    Outcome,
    RenderContext,
    Transport,
    TransportError,
    Verdict,
    build_request,
    classify_answer,
    redact_url,
    render_digest,
    scrubber,
)

logger = logging.getLogger(__name__)

PLATFORM_LIMITS: dict[RobotKind, tuple[tuple[int, float], ...]] = {
    RobotKind.WECOM: ((20, 60.0),),  # spec §1
    RobotKind.DINGTALK: ((20, 60.0),),  # spec §2 (exceeding it throttles the robot for 10 minutes)
    RobotKind.FEISHU: ((5, 1.0), (100, 60.0)),  # spec §3
    RobotKind.WEBHOOK: (),  # our own endpoint: no published limit, answers 429 if it has one
}
"""(max requests, window seconds) per robot kind."""

UNKNOWN_MAX_ATTEMPTS = 5
"""An answer we can't classify is retried this many times, then the message is given up (not the robot)."""

_SCAN = 200  # pending rows read per step; a digest never holds more than fits the platform's size limit


class SlidingWindowLimiter:
    """Counts requests in every window ending now; a request at t counts while now - t < window."""

    def __init__(self, windows: Sequence[tuple[int, float]]) -> None:
        self._windows = [(limit, round(window_s * 1000)) for limit, window_s in windows]
        self._horizon = max((w for _, w in self._windows), default=0)
        self._sent: deque[int] = deque()

    @property
    def unlimited(self) -> bool:
        return not self._windows

    def _prune(self, now_ms: int) -> None:
        while self._sent and now_ms - self._sent[0] >= self._horizon:
            self._sent.popleft()

    def available(self, now_ms: int) -> int:
        """Requests that may go out now without breaking any window (a large number when unlimited)."""
        if self.unlimited:
            return 1 << 30
        self._prune(now_ms)
        return max(0, min(limit - sum(1 for t in self._sent if now_ms - t < w) for limit, w in self._windows))

    def next_slot_ms(self, now_ms: int) -> int:
        """The earliest time ≥ now at which one more request fits every window."""
        self._prune(now_ms)
        at = now_ms
        for limit, w in self._windows:
            inside = [t for t in self._sent if now_ms - t < w]
            if len(inside) >= limit:
                at = max(at, inside[len(inside) - limit] + w)
        return at

    def record(self, now_ms: int) -> None:
        self._sent.append(now_ms)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: delay(n) = min(max, base·2^(n-1)) · (1 - jitter·U[0,1))."""

    base_s: float = 2.0
    max_s: float = 300.0
    jitter: float = 0.5

    def delay(self, failures: int, rng: random.Random) -> float:
        # The exponent is capped too: a days-long outage must not overflow the float.
        raw = min(self.max_s, self.base_s * 2.0 ** min(max(0, failures - 1), 40))
        return raw * (1.0 - self.jitter * rng.random())


@dataclass(slots=True)
class SenderStats:
    requests: int = 0
    messages_sent: int = 0
    alerts_sent: int = 0
    digests_sent: int = 0
    alerts_failed: int = 0
    retries: int = 0


class _RobotLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: object, kwargs: object) -> tuple[str, object]:  # type: ignore[override]
        assert self.extra is not None
        return f"robot={self.extra['robot']} kind={self.extra['kind']} {msg}", kwargs


class RobotSender:
    """Delivers one robot's pending outbox rows; `run()` is its task, `wake()` says new rows exist."""

    def __init__(
        self,
        robot: RobotConfig,
        *,
        outbox: Outbox,
        transport: Transport,
        clock: Clock,
        ctx: RenderContext,
        backoff: Backoff,
        rng: random.Random,
    ) -> None:
        self.robot = robot
        self._outbox = outbox
        self._transport = transport
        self._clock = clock
        self._ctx = ctx
        self._backoff = backoff
        self._rng = rng
        self._limiter = SlidingWindowLimiter(PLATFORM_LIMITS[robot.kind])
        self._scrub = scrubber(robot)
        self._log = _RobotLog(logger, {"robot": robot.name, "kind": robot.kind.value})
        self._wake = asyncio.Event()
        self._waiting = False
        self._deadline_ms: int | None = None
        self._stopping = False
        self._failures = 0  # consecutive failed requests (resets on success)
        self._skew_retried = False
        self._logged_message_codes: set[str] = set()
        self.disabled: str | None = None
        """Why the platform refused this robot's configuration; no more requests until restart."""
        self.stats = SenderStats()

    # -- control

    def seed(self, now_ms: int) -> None:
        """Count what was sent in the last minute before a restart against the rate windows."""
        horizon = max((w for _, w in PLATFORM_LIMITS[self.robot.kind]), default=0.0)
        for ts in self._outbox.recent_requests(self.robot.name, now_ms - round(horizon * 1000)):
            self._limiter.record(ts)

    def wake(self) -> None:
        self._wake.set()

    def request_stop(self) -> None:
        """Finish what can go out now (no waiting on backoff or rate windows), then return from run()."""
        self._stopping = True
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Blocked with nothing due: waiting for new alerts, or for a future time that has not come."""
        if not self._waiting or self._wake.is_set():
            return False
        return self._deadline_ms is None or self._clock.now_ms() < self._deadline_ms

    # -- loop

    async def run(self) -> None:
        while True:
            self._wake.clear()
            batch, until_ms = self._plan(self._clock.now_ms())
            if batch:
                await self._send(batch)
                continue
            if self._stopping:
                return
            await self._wait(until_ms)

    def _plan(self, now_ms: int) -> tuple[list[Delivery], int | None]:
        """What to send now (oldest first, folded if the window cannot take them singly), or when to retry."""
        if self.disabled is not None:
            return [], None
        pending = self._outbox.pending(self.robot.name, _SCAN)
        if not pending:
            return [], None
        if pending[0].next_attempt_ts > now_ms:
            return [], pending[0].next_attempt_ts
        slots = self._limiter.available(now_ms)
        if slots == 0:
            return [], self._limiter.next_slot_ms(now_ms)
        if len(pending) <= slots:
            return pending[:1], None
        return pending, None

    async def pause(self, seconds: float) -> None:
        """Wait on the clock (ended early by wake() or stop), e.g. before restarting after a crash."""
        await self._wait(self._clock.now_ms() + round(seconds * 1000))

    async def _wait(self, until_ms: int | None) -> None:
        """Sleep on the clock until `until_ms` (None: forever) or until `wake()`."""
        if until_ms is None:
            self._waiting = True
            try:
                await self._wake.wait()
            finally:
                self._waiting = False
            return
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            while not wake.done():
                now = self._clock.now_ms()
                if now >= until_ms:
                    return
                sleep = asyncio.ensure_future(self._clock.sleep((until_ms - now) / 1000))
                try:
                    # Let the sleep register with the clock before reporting idle: a test that advances a
                    # ManualClock in between would otherwise move time under a sleeper that isn't there yet.
                    await asyncio.sleep(0)
                    if self._clock.now_ms() != now:
                        continue  # time moved while registering; recompute the delay
                    self._deadline_ms = until_ms
                    self._waiting = True
                    await asyncio.wait({wake, sleep}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self._waiting = False
                    self._deadline_ms = None
                    sleep.cancel()
        finally:
            wake.cancel()

    async def _send(self, batch: list[Delivery]) -> None:
        now = self._clock.now_ms()
        message = render_digest(self.robot, [d.suggestion for d in batch], self._ctx)
        carried = batch[: len(message.alert_ids)]
        seqs = [d.seq for d in carried]
        message_id = (
            carried[0].alert_id if len(carried) == 1 else f"digest:{carried[0].seq}-{carried[-1].seq}"
        )
        request = build_request(self.robot, message.payload, now)
        # Committed before the request leaves: a crash from here on resends this one message, nothing else.
        self._outbox.mark_attempt(seqs, now)
        self._limiter.record(now)
        self.stats.requests += 1
        try:
            response = await self._transport.post(request)
        except TransportError as exc:
            outcome = Outcome(Verdict.RETRY, "network", self._scrub(str(exc)))
        else:
            outcome = classify_answer(self.robot.kind, response.status, response.headers, response.text)
            outcome = Outcome(
                outcome.verdict, outcome.code, self._scrub(outcome.message), outcome.min_delay_s
            )
        attempts = max(d.attempts for d in carried) + 1
        self._handle(outcome, carried, message_id, attempts)

    # -- outcomes

    def _handle(self, outcome: Outcome, carried: list[Delivery], message_id: str, attempts: int) -> None:
        seqs = [d.seq for d in carried]
        now = self._clock.now_ms()
        verdict = outcome.verdict
        if verdict is Verdict.SKEW and self._skew_retried:
            verdict = Verdict.ROBOT
        if verdict is Verdict.OK:
            self._outbox.mark_sent(seqs, now, message_id)
            if self._failures:
                self._log.info("delivering again after %d failed request(s)", self._failures)
            self._failures = 0
            self._skew_retried = False
            self.stats.messages_sent += 1
            self.stats.alerts_sent += len(carried)
            if len(carried) > 1:
                self.stats.digests_sent += 1
                self._log.info("sent a digest of %d alerts (%s)", len(carried), message_id)
            else:
                self._log.debug("sent alert #%s", carried[0].alert_id)
        elif verdict is Verdict.RETRY or (verdict is Verdict.UNKNOWN and attempts < UNKNOWN_MAX_ATTEMPTS):
            self._retry(outcome, seqs, now, loud=verdict is Verdict.UNKNOWN)
        elif verdict is Verdict.SKEW:
            self._skew_retried = True
            # Loud but not final: the ERROR comes once, if the retry with a fresh timestamp fails too.
            self._log.warning(
                "the platform rejected the timestamp or signature (code=%s %s): "
                "clock skew or a wrong secret; retrying once",
                outcome.code,
                outcome.message,
            )
            self._outbox.mark_retry(seqs, now + round(self._backoff.base_s * 1000), outcome.describe())
        elif verdict is Verdict.ROBOT:
            self._disable(outcome, seqs)
        else:  # MESSAGE, or UNKNOWN out of attempts: this message is lost, the robot keeps working
            self._failures = 0
            self.stats.alerts_failed += len(seqs)
            self._outbox.mark_failed(seqs, outcome.describe())
            level = logging.ERROR if outcome.code not in self._logged_message_codes else logging.DEBUG
            self._logged_message_codes.add(outcome.code)
            self._log.log(
                level,
                "the platform rejected a message (code=%s %s) after %d attempt(s); %d alert(s) marked failed",
                outcome.code,
                outcome.message,
                attempts,
                len(seqs),
            )

    def _retry(self, outcome: Outcome, seqs: list[int], now: int, *, loud: bool) -> None:
        self._failures += 1
        self.stats.retries += 1
        delay = max(self._backoff.delay(self._failures, self._rng), outcome.min_delay_s)
        self._outbox.mark_retry(seqs, now + round(delay * 1000), outcome.describe())
        # One WARNING per outage, then DEBUG: a long outage must not flood the log.
        level = logging.WARNING if self._failures == 1 or loud else logging.DEBUG
        self._log.log(
            level,
            "delivery failed (%s), retry %d in %.1fs; alerts stay in the outbox",
            outcome.describe(),
            self._failures,
            delay,
        )

    def _disable(self, outcome: Outcome, seqs: list[int]) -> None:
        reason = outcome.describe()
        self.disabled = reason
        self._outbox.mark_failed(seqs, reason)
        others = self._outbox.fail_pending(self.robot.name, f"robot disabled: {reason}")
        self.stats.alerts_failed += len(seqs) + others
        self._log.error(
            "the platform refused this robot (code=%s %s) at %s: check its secret, keywords (every message "
            "contains 【场控】), IP whitelist and url; %d alert(s) marked failed, no more requests until the "
            "config is fixed and livebot restarted",
            outcome.code,
            outcome.message,
            redact_url(self.robot.url),
            len(seqs) + others,
        )
