"""App: builds everything from Config and runs it; start/stop order in one place.

Shutdown runs in reverse of start-up: stop sources → drain the pipeline (every submitted event is
analysed and stored) → stop the advisor ticker and run a last tick → flush suggestions to the sinks →
end sessions → close the store → close the host screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bot.analytics import LiveAnalytics, session_meta
from bot.bus import Bus, BusRole, make_bus
from bot.clock import Clock, EventTimeClock, SystemClock
from bot.config import (
    BilibiliSourceConfig,
    Config,
    DouyinSourceConfig,
    GenericSourceConfig,
    GenericWsSourceConfig,
    ReplaySourceConfig,
    RoomConfig,
    SimulatorSourceConfig,
)
from bot.errors import ConfigError, LivebotError, SourceError
from bot.events import Event, platform_label
from bot.outputs.store import Store
from bot.pipeline import Pipeline
from bot.privacy import ViewerHasher, load_or_create_salt
from bot.sources.base import ReconnectPolicy, Source
from bot.state import DelayThresholds, RoomState

if TYPE_CHECKING:
    from bot.advisors.base import Suggestion
    from bot.advisors.engine import AdvisorEngine
    from bot.dispatcher import Dispatcher
    from bot.outputs.screen import ScreenServer
    from bot.scheduler import LiveTicker
    from bot.sources.ingest import IngestRouter
    from nlp.analyzer import Analysis, Analyzer

log = logging.getLogger(__name__)


def make_hasher(cfg: Config) -> ViewerHasher:
    return ViewerHasher(load_or_create_salt(cfg.data_dir))


def make_analyzer(cfg: Config) -> Analyzer:
    from nlp.analyzer import Analyzer
    from nlp.classifiers import make_classifier

    c = cfg.classifier
    options: dict[str, object] = {}
    if c.name == "transformer":
        options = {"model": c.model or None, "allow_hub": c.allow_hub, "threads": c.threads}
    return Analyzer(make_classifier(c.name, **options), compliance=_compliance(cfg))


def _compliance(cfg: Config) -> Any:
    """The `[advisors.checks] compliance_lexicon` override, or None for the shipped lexicon."""
    path = cfg.advisors.checks.compliance_lexicon
    if not path:
        return None
    from nlp.compliance import ComplianceLexicon

    try:
        return ComplianceLexicon.load(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load compliance lexicon {path}: {e}",
                          key="advisors.checks.compliance_lexicon") from None


def make_fallback_analyzer(cfg: Config) -> object | None:
    """The fast analyzer used live while analysis is behind; None when it would be the configured one."""
    name = cfg.pipeline.fallback_classifier
    if name == "none" or name == cfg.classifier.name:
        return None
    from nlp.analyzer import Analyzer

    return Analyzer(name, compliance=_compliance(cfg))


def build_source(
    room: RoomConfig, index: int, src_cfg: object, *, clock: Clock, hasher: ViewerHasher, cfg: Config,
    source_index: int = 0,
) -> Source:
    """One Source for one `rooms[i].sources[j]` entry; the room name becomes the Event room.

    Kind "generic" has no Source of its own: the room's events come through the one ingest listener
    (build_ingest). Raises ConfigError naming the key for a missing file or environment variable.
    """
    key = f"rooms[{index}].sources[{source_index}]"
    if isinstance(src_cfg, SimulatorSourceConfig):
        from bot.sources.simulator import Simulator, SimulatorSource

        sim = Simulator(seed=src_cfg.seed, rate=src_cfg.rate, room=room.name, start_ts=clock.now_ms())
        return SimulatorSource(sim, clock=clock, hasher=hasher)
    if isinstance(src_cfg, ReplaySourceConfig):
        from bot.sources.replay import ReplaySource

        path = Path(src_cfg.path)
        if not path.exists():
            raise ConfigError(f"replay file not found: {path}", key=f"{key}.path")
        return ReplaySource(
            path, hasher=hasher, clock=clock, speed=src_cfg.speed, room=room.name,
            store_names=cfg.privacy.store_names,
        )
    if isinstance(src_cfg, BilibiliSourceConfig):
        from bot.sources.bilibili import BilibiliSource

        return BilibiliSource(
            src_cfg.room_id, hasher=hasher, clock=clock, room=room.name, api_base=src_cfg.api_base,
            ws_url=src_cfg.ws_url or None, cookie=read_cookie(src_cfg, key),
            store_names=cfg.privacy.store_names, policy=_policy(src_cfg), heartbeat_s=src_cfg.heartbeat_s,
            auth_timeout_s=src_cfg.auth_timeout_s, receive_timeout_s=src_cfg.receive_timeout_s or None,
            trust_env=src_cfg.trust_env,
        )
    if isinstance(src_cfg, DouyinSourceConfig):
        from bot.sources.douyin_push import DouyinPushSource

        return DouyinPushSource(
            hasher=hasher, room=room.name, url=src_cfg.url, douyin_room=src_cfg.douyin_room or None,
            clock=clock, policy=_policy(src_cfg), store_names=cfg.privacy.store_names,
            name=f"douyin:{src_cfg.douyin_room}" if src_cfg.douyin_room else "douyin",
        )
    if isinstance(src_cfg, GenericWsSourceConfig):
        from bot.sources.generic_ws import GenericWsClient

        return GenericWsClient(
            src_cfg.url, hasher=hasher, room=room.name, token=src_cfg.token or None, clock=clock,
            policy=_policy(src_cfg), store_names=cfg.privacy.store_names,
        )
    if isinstance(src_cfg, GenericSourceConfig):
        raise ConfigError('kind "generic" is served by the [ingest] listener, not a source of its own',
                          key=f"{key}.kind")
    raise ConfigError(f"unsupported source kind {getattr(src_cfg, 'kind', '?')!r}", key=f"{key}.kind")


def _policy(src_cfg: BilibiliSourceConfig | DouyinSourceConfig | GenericWsSourceConfig) -> ReconnectPolicy:
    return ReconnectPolicy(base_s=src_cfg.reconnect_base_s, max_s=src_cfg.reconnect_max_s)


def read_cookie(src_cfg: BilibiliSourceConfig, key: str) -> str | None:
    """The Cookie header from `cookie_file` or `cookie_env` (None = anonymous); never logged.

    A file may hold the header as copied from the browser, with or without a leading `Cookie:`, over
    one or several lines; lines starting with # are comments.
    """
    if src_cfg.cookie_env:
        value = os.environ.get(src_cfg.cookie_env, "").strip()
        if not value:
            raise ConfigError(f"environment variable {src_cfg.cookie_env} is not set or empty",
                              key=f"{key}.cookie_env")
        return _cookie_header(value)
    if not src_cfg.cookie_file:
        return None
    return read_cookie_file(src_cfg.cookie_file, key=f"{key}.cookie_file")


def read_cookie_file(file: str, *, key: str) -> str:
    """A cookie file's Cookie header; ConfigError naming `key` when it is missing, unreadable or empty."""
    path = Path(file).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"cookie file not found: {path}", key=key) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read cookie file {path}: {reason}", key=key) from None
    cookie = _cookie_header(text)
    if not cookie:
        raise ConfigError(f"cookie file {path} holds no cookie", key=key)
    if os.name == "posix" and mode & 0o077:
        log.warning("cookie file %s is readable by other users; chmod 600 it", path)
    return cookie


def _cookie_header(text: str) -> str:
    parts = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line[:7].lower() == "cookie:":
            line = line[7:].strip()
        parts.append(line.rstrip(";").strip())
    return "; ".join(p for p in parts if p)


def build_ingest(cfg: Config, *, clock: Clock, hasher: ViewerHasher) -> IngestRouter | None:
    """The generic ingest listener (`[ingest]`) routing pushed events to rooms by `match`; None when off."""
    if not cfg.ingest.enabled:
        return None
    from bot.sources.generic_ws import GenericIngestServer
    from bot.sources.ingest import IngestRouter

    ing = cfg.ingest
    routes = {
        key: room.name
        for room in cfg.rooms
        for src in room.sources
        if isinstance(src, GenericSourceConfig)
        for key in src.match
    }
    if not routes:
        log.warning('[ingest] is enabled but no room has a source of kind "generic": '
                    "every pushed event will be counted as unmatched and dropped")
    try:
        server = GenericIngestServer(
            port=ing.port, hasher=hasher, host=ing.host, token=ing.token or None, clock=clock,
            store_names=cfg.privacy.store_names, allowed_origins=ing.allowed_origins, name="generic-ingest",
        )
    except ConfigError as e:
        raise ConfigError(str(e).split(": ", 1)[-1], key=f"ingest.{e.key}") from None
    return IngestRouter(server, routes)


def build_engines(
    cfg: Config, *, clock: Clock | None = None, follow: bool = False, script: str | None = None
) -> dict[str, AdvisorEngine]:
    """One advisor engine per configured room (none with advisors off); ScriptError for a bad run-sheet."""
    if not cfg.advisors.enabled:
        return {}
    from bot.advisors.engine import build_engine

    return {
        r.name: build_engine(r.name, cfg.advisors, script=script or r.script, clock=clock, follow=follow)
        for r in cfg.rooms
        if not r.watch_only  # benchmark rooms: same pipeline, no suggestions or alerts
    }


@dataclass
class App:
    """The live service: sources → pipeline → RoomState/store, plus the terminal status line."""

    cfg: Config
    clock: Clock = field(default_factory=SystemClock)
    out: TextIO = sys.stderr
    bus_url: str | None = None
    """None = `bus.url` of the config; "" = the in-process queue; redis://HOST:PORT[/DB] = Redis Streams."""
    bus_role: str | None = None
    """None = `bus.role`; on a shared bus: all (sources and analysis), sources (publish only) or worker."""

    def __post_init__(self) -> None:
        # Run-sheets first: a bad one is a clear error before anything is opened.
        self.engines: dict[str, AdvisorEngine] = build_engines(self.cfg, clock=self.clock)
        self.hasher = make_hasher(self.cfg)
        # Sources before the store: a missing cookie file is an error before anything is opened.
        built = self._build_sources()
        self.ingest: IngestRouter | None = build_ingest(self.cfg, clock=self.clock, hasher=self.hasher)
        self.store: Store | None = Store.open(self.cfg.store_path) if self.cfg.store.enabled else None
        p = self.cfg.pipeline
        self.pipeline = Pipeline(
            make_analyzer(self.cfg),
            clock=self.clock, store=self.store, queue_size=p.queue_size, batch_size=p.batch_size,
            max_wait_ms=p.max_wait_ms, overflow=p.overflow,
            session_meta={"classifier": self.cfg.classifier.name},
            fallback=make_fallback_analyzer(self.cfg),  # type: ignore[arg-type]
            degrade_lag_ms=p.degrade_lag_ms, store_backlog=p.store_backlog,
        )
        self.pipeline.delay_thresholds = DelayThresholds.from_alerts(self.cfg.advisors.alerts)
        self.sources: list[Source] = []
        for room_name, engine in self.engines.items():
            engine.bind(self.pipeline.state(room_name))
        for room in self.cfg.rooms:
            self.pipeline.state(room.name)
        for room_name, src in built:
            self.sources.append(src)
            _register_status(self.pipeline.state(room_name), src)
        if self.ingest is not None:
            self.sources.append(self.ingest)
            for room_name in sorted(self.ingest.rooms):
                _register_status(self.pipeline.state(room_name), self.ingest)
        self.screen: ScreenServer | None = None
        if self.cfg.screen.enabled:
            from bot.outputs.screen import RoomActions, ScreenServer

            actions = RoomActions(
                self.states, clock=self.clock, store=self.store, sessions=self.pipeline.sessions,
                engine_for=self._engine_for,
            )
            self.screen = ScreenServer.from_config(
                self.cfg.screen, snapshot_provider=self.screen_snapshots, action_handler=actions,
                clock=self.clock, snapshot_steps=self.screen_snapshot_steps,
            )
        self._build_advisor_outputs()
        self._reactions: list[Suggestion] = []
        self._react_wake = asyncio.Event()
        self.pipeline.hooks.append(self._on_analyzed)
        self.analytics = LiveAnalytics(r.name for r in self.cfg.rooms if r.watch_only)
        self.pipeline.before_apply.append(self.analytics.observe)
        self.pipeline.hooks.append(self.analytics.observe_analyzed)
        if self.bus_url is None:
            self.bus_url = self.cfg.bus.url
        if self.bus_role is None:
            self.bus_role = self.cfg.bus.role
        self.bus: Bus = make_bus(self.bus_url, self.pipeline, role=self.bus_role, store=self.store,
                                 settings=self.cfg.bus)
        self._restored: set[tuple[str, str]] = set()
        if hasattr(self.bus, "on_take") and self.store is not None:
            self.bus.on_take = self._restore_taken_room
        if self.bus.role is BusRole.WORKER:
            # A worker analyses the rooms it owns on the bus; the configured sources run elsewhere.
            self.sources = []
            for st in self.states.values():
                st.sources.clear()
        self._stop = asyncio.Event()

    def _build_sources(self) -> list[tuple[str, Source]]:
        """(room, source) for every configured source but kind "generic" (the ingest listener feeds those).

        Several rooms and platforms run in one process; several sources in one room make a merged room
        (one RoomState, each Event keeps its platform).
        """
        built: list[tuple[str, Source]] = []
        for i, room in enumerate(self.cfg.rooms):
            for j, src_cfg in enumerate(room.sources):
                if isinstance(src_cfg, GenericSourceConfig):
                    continue  # fed by the ingest listener
                src = build_source(
                    room, i, src_cfg, clock=self.clock, hasher=self.hasher, cfg=self.cfg, source_index=j
                )
                built.append((room.name, src))
        return built

    @property
    def states(self) -> dict[str, RoomState]:
        return self.pipeline.states

    def _engine_for(self, room: str) -> Any:
        """The advisor engine running `room` (screen actions go to it), or None without advisors."""
        engines = getattr(self, "engines", None)
        if isinstance(engines, dict):
            return engines.get(room)
        return getattr(self, "engine", None)

    def screen_snapshots(self) -> dict[str, dict[str, Any]]:
        """Every room's snapshot at the clock's now (quiet rooms age too), for the host screen.

        With advisors, `advisor` adds the segment and its talking points, the run-sheet's segments, the
        coupon and prompt countdowns and the pending suggestions (shape: bot.outputs.screen.view).
        """
        now = self.clock.now_ms()
        return {room: self._room_snapshot(room, st, now) for room, st in list(self.states.items())}

    async def screen_snapshot_steps(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """`screen_snapshots` one room at a time, yielding to the loop in between (the 2 Hz broadcast:
        ten rooms in one go held the loop ~40 ms, which analysed events felt as latency)."""
        now = self.clock.now_ms()
        for i, (room, st) in enumerate(list(self.states.items())):
            if i:
                await asyncio.sleep(0)
            yield room, self._room_snapshot(room, st, now)

    def _room_snapshot(self, room: str, st: RoomState, now: int) -> dict[str, Any]:
        from bot.outputs.screen.view import advisor_view

        out = st.snapshot(now)
        running = self.engines.get(room)
        if running is not None:
            out["advisor"] = advisor_view(running, now)
        seg = running.plan.segment(running.memory.segment or "") if running is not None else None
        out["analytics"] = self.analytics.view(
            room, st, now, segment=seg.name if seg else None, answers=seg.answers_topics if seg else None,
            states=self.states,
        )
        return out

    def _room_is_live(self, room: str) -> bool:
        """Quiet hours never silence a live room: running counts as live until the platform says it ended."""
        st = self.pipeline.states.get(room)
        return st is None or st.live is not False

    def restore_session(self, room: str, session_id: str) -> int:
        """Fold a stored session back in before a resumed run: the room's windows, totals, questions and
        analytics continue from the last run, and a source that replays its last messages after the
        restart is deduplicated against them. Returns how many events were read back.

        The advisors continue too (AdvisorEngine.resume): coupon drops count against the budget, the room
        stays in its segment, checklist ticks stay ticked; the old run's pending suggestions lapse.
        """
        if self.store is None:
            raise LivebotError("resuming a session needs [store] enabled = true")
        info = self.store.session(session_id)
        if info is None or info.room != room:
            return 0  # a new session id: nothing to restore
        first = (room, session_id) not in self._restored
        if not first and room in self.pipeline.states:
            return 0  # already read back (--session, then the bus taking the room): never count twice
        self._restored.add((room, session_id))
        n = 0
        for ev, an in self.store.iter_events(session_id, chunk=20_000):
            self.pipeline.remember(ev)
            self.analytics.observe(ev)
            self.pipeline.state(ev.room).apply(ev, an)
            if an is not None:
                self.analytics.observe_analyzed((ev,), (an,))
            n += 1
        if first:
            suggestions = self.store.suggestions(session_id)
            now = self.clock.now_ms()
            for s in suggestions:
                if s.get("state") == "pending":
                    # Its countdown and buttons belonged to the stopped process: it lapsed there.
                    self.store.set_suggestion_state(session_id, str(s["id"]), "expired", now)
            engine = self.engines.get(room)
            if engine is not None:  # the engine's memory outlives a handed-off room's state
                restored = engine.resume(info.started_ts, suggestions, self.store.marks(session_id))
                log.info("room=%s resumed session %s: %d events, advisors: %s", room, session_id, n, restored)
        return n

    def _restore_taken_room(self, room: str, session_id: str | None) -> None:
        """A shared bus gave this worker `room` (a worker died, or rebalancing): continue its state."""
        if session_id is None:
            return
        n = self.restore_session(room, session_id)
        if n:
            log.info("room=%s taken over: %d stored events of session %s read back", room, n, session_id)

    def request_stop(self) -> None:
        """Signal-safe: SIGINT/SIGTERM only ask for a stop; run() does the ordered shutdown."""
        self._stop.set()

    async def run(self, *, duration_s: float | None = None) -> None:
        if self.screen is not None:
            try:
                await self.screen.start()
            except BaseException:
                self.pipeline.close()
                if self.store is not None:
                    self.store.close()
                raise
            hint = "  (地址需带 ?token=…)" if self.cfg.screen.token or self.cfg.screen.control_token else ""
            print(f"主播屏: {self.screen.url}  场控: {self.screen.control_url}{hint}",
                  file=self.out, flush=True)
        await self._start_advisors()
        react_task = asyncio.create_task(self._react_loop(), name="advisor-reactions")
        pipeline_task = asyncio.create_task(self.pipeline.run(), name="pipeline")
        await self.bus.start()
        source_tasks = [
            asyncio.create_task(self._run_source(s), name=f"source-{s.status.name}") for s in self.sources
        ]
        status_task = asyncio.create_task(self._status_loop(), name="status")
        try:
            if duration_s is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), duration_s)
            else:
                await self._stop.wait()
        finally:
            await self._shutdown(source_tasks, pipeline_task, status_task, react_task)

    def _build_advisor_outputs(self) -> None:
        from bot.dispatcher import CallbackSink, Dispatcher, Sink, StoreSink
        from bot.scheduler import LiveTicker

        sinks: list[Sink] = []
        if self.store is not None:
            sinks.append(StoreSink(self.store, self.pipeline.sessions.get))
        screen = self.screen
        if screen is not None:
            sinks.append(CallbackSink("screen", lambda s: screen.publish_suggestion(s.room, s.to_json())))
        if self.cfg.alerts.robots:
            from bot.outputs.alerts import AlertSink, resolve_outbox_path

            sinks.append(AlertSink(
                self.cfg.alerts, outbox_path=resolve_outbox_path(self.cfg.alerts, self.cfg.store_path),
                clock=self.clock, is_live=self._room_is_live,
            ))
        self.dispatcher: Dispatcher = Dispatcher(sinks)
        self.ticker: LiveTicker = LiveTicker(self.clock)

    async def _start_advisors(self) -> None:
        await self.dispatcher.start()
        if self.engines:
            self.ticker.add_job("advisors", self.cfg.advisors.tick_s, self._advisor_tick)
            await self.ticker.start()

    async def _advisor_tick(self, now: int) -> None:
        """One tick of every room's advisors; new suggestions and state changes go to the sinks."""
        items: list[Suggestion] = []
        # On a shared bus a room's advisors run where its events are analysed: a worker that does not own
        # a room (or just handed it to another) would advise on an empty or stale state.
        rooms = [(room, engine) for room, engine in self.engines.items() if self.bus.owns(room)]
        for i, (room, engine) in enumerate(rooms):
            if i:
                # Let analysed batches in between rooms: ten rooms' advisors in one go would hold the loop
                # for tens of ms and show up as event latency.
                await asyncio.sleep(0)
            items += engine.tick(self.pipeline.state(room), now)
            items += engine.drain_changes()
        await self.dispatcher.dispatch(items)

    def _on_analyzed(self, batch: Sequence[Event], analyses: Sequence[Analysis | None]) -> None:
        """Pipeline hook: new questions reach the advisors that must answer within seconds (answer cards)
        now, not at the next tick; `_react_loop` sends what they say."""
        rooms = {ev.room for ev, an in zip(batch, analyses, strict=True) if an is not None and an.confusion}
        if not rooms or not self.engines:
            return
        now = self.clock.now_ms()
        for room in sorted(rooms):
            engine = self.engines.get(room)
            if engine is not None:
                self._reactions += engine.on_data(self.pipeline.state(room), now)
        if self._reactions:
            self._react_wake.set()

    async def _react_loop(self) -> None:
        while True:
            await self._react_wake.wait()
            self._react_wake.clear()
            items, self._reactions = self._reactions, []
            try:
                await self.dispatcher.dispatch(items)
            except Exception:
                # Sinks are guarded by the dispatcher; this is a bug, but later cards must still go out.
                log.exception("dispatching %d suggestion(s) made on new data failed", len(items))

    async def _stop_advisors(self) -> None:
        if self._reactions:
            items, self._reactions = self._reactions, []
            await self.dispatcher.dispatch(items)
        await self.ticker.stop()
        if self.engines:
            try:
                await self._advisor_tick(self.clock.now_ms())
            except Exception:
                log.exception("last advisor tick failed")
        await self.dispatcher.stop()

    async def _run_source(self, src: Source) -> None:
        try:
            await src.run(self.bus.publish)
        except asyncio.CancelledError:
            raise
        except SourceError as e:
            # Expected trouble (a port in use, an unreadable file): one line a human can act on.
            log.error("room=%s source %s stopped: %s", src.status.room, src.status.name, e)
        except Exception:
            # A source bug must not take the room down silently: log it with context, keep the rest.
            log.exception("room=%s source %s crashed", src.status.room, src.status.name)

    async def _shutdown(
        self, source_tasks: list[asyncio.Task[None]], pipeline_task: asyncio.Task[None],
        status_task: asyncio.Task[None], react_task: asyncio.Task[None],
    ) -> None:
        status_task.cancel()
        for s in self.sources:
            s.stop()
        try:
            async with asyncio.timeout(10):
                await asyncio.gather(*source_tasks, return_exceptions=True)
        except TimeoutError:
            for t in source_tasks:
                t.cancel()
        try:
            async with asyncio.timeout(15):
                await self.bus.stop_intake()
        except TimeoutError:
            log.error("bus did not flush within 15 s; unsent or unread events stay queued in it")
        await self.pipeline.stop()
        try:
            async with asyncio.timeout(30):
                await pipeline_task
        except TimeoutError:
            log.error("pipeline did not drain within 30 s; %d events still queued", self.pipeline.queue_depth)
            pipeline_task.cancel()
        self.pipeline.close()
        try:
            async with asyncio.timeout(10):
                await self.bus.close()  # acknowledges what the pipeline stored
        except TimeoutError:
            log.error("bus did not close within 10 s; its rooms pass to another worker when the leases end")
        react_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await react_task
        try:
            async with asyncio.timeout(10):
                await self._stop_advisors()
        except TimeoutError:
            log.error("advisors did not stop within 10 s; the last suggestions may not be stored")
        if self.store is not None:
            now = self.clock.now_ms()
            watch_only = {r.name for r in self.cfg.rooms if r.watch_only}
            for room, sid in self.pipeline.sessions.items():
                self.store.end_session(sid, now, {
                    "pipeline": self.pipeline.stats.as_dict(),
                    **session_meta(self.engines.get(room), watch_only=room in watch_only),
                })
            self.store.close()
        with contextlib.suppress(asyncio.CancelledError):
            await status_task
        if self.screen is not None:
            # Last: pages keep showing the final state until the end, then get GOING_AWAY.
            try:
                async with asyncio.timeout(5):
                    await self.screen.stop()
            except TimeoutError:
                log.error("host screen did not stop within 5 s")

    async def _status_loop(self) -> None:
        if not self.cfg.status.terminal:
            return
        while True:
            await self.clock.sleep(self.cfg.status.interval_s)
            for st in self.states.values():
                st.advance(self.clock.now_ms())
                print(format_status(st), file=self.out, flush=True)


def _register_status(state: RoomState, src: Source) -> None:
    """Expose a source's live status in its room (screen, advisors' source_down) under a unique name."""
    name = src.status.name
    n = 2
    while name in state.sources:
        name = f"{src.status.name}#{n}"
        n += 1
    state.sources[name] = src.status


def format_status(st: RoomState) -> str:
    """One terminal line: rate, sentiment mix, confusion, online and the top question."""
    w = st.window(60)
    qs = st.questions(60, limit=1)
    from nlp.topics import TOPIC_LABELS

    top = ""
    if qs:
        topic = TOPIC_LABELS.get(qs[0].topic, qs[0].topic)
        top = f" | 热问[{topic}] {qs[0].examples[0]} ×{qs[0].count}"
    online = f" | 在线 {st.online}" if st.online is not None else ""
    degraded = " | ⚠分析降级" if st.degraded else ""
    late = "".join(f" | ⚠{platform_label(p)}延迟 {d.median_ms / 1000:.1f} 秒"
                   for p, d in st.platform_delays(60).items()
                   if st.delay_thresholds.level(d) == "late")
    return (
        f"[{st.room}] 弹幕 {w.comments_per_min:.0f}/分 | 正 {w.positive_share:.0%} 负 {w.negative_share:.0%}"
        f" | 疑问 {w.confusion_rate:.0%}{online}{degraded}{late}{top}"
    )


@dataclass
class ReplayResult:
    state: RoomState
    session_id: str | None
    stats: object
    pipeline: dict[str, int]
    events: list[Event] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    """Everything the advisors said, in the order they said it (event time)."""
    advisor_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per room: achieved vs target (AdvisorEngine.stats)."""


async def replay_file(
    path: Path,
    cfg: Config,
    *,
    speed: float | None = None,
    room: str | None = None,
    store: Store | None = None,
    on_event: Callable[[Event], None] | None = None,
    progress: bool = False,
    script: str | None = None,
    on_suggestion: Callable[[Suggestion], None] | None = None,
) -> ReplayResult:
    """Run a log through the same pipeline as live, on event time; returns the final room state.

    With `[advisors] enabled`, the same advisors as live tick every `advisors.tick_s` of event time (a
    VirtualTicker advanced before each event is applied), assuming the host follows every suggestion.
    `script` picks the run-sheet (else the room's `script`, else `advisors.script`).
    """
    from bot.sources.replay import ReplaySource

    clock = EventTimeClock()
    p = cfg.pipeline
    pipeline = Pipeline(
        make_analyzer(cfg),
        clock=clock, store=store, queue_size=p.queue_size, batch_size=p.batch_size, max_wait_ms=p.max_wait_ms,
        overflow="block", session_meta={"classifier": cfg.classifier.name, "replay": str(path)},
    )
    source = ReplaySource(
        path, hasher=make_hasher(cfg), clock=clock, speed=speed, room=room, store_names=cfg.privacy.store_names
    )
    bar = _progress_bar(path) if progress else None
    advisors = _ReplayAdvisors(cfg, pipeline, script=script, on_suggestion=on_suggestion)
    pipeline.before_apply.append(advisors.before_apply)

    async def emit(ev: Event) -> None:
        clock.observe(ev.received_ts)
        if on_event is not None:
            on_event(ev)
        if bar is not None:
            bar.update(1)
        await pipeline.submit(ev)

    task = asyncio.create_task(pipeline.run())
    try:
        await source.run(emit)
    finally:
        await pipeline.stop()
        await task
        pipeline.close()
        if bar is not None:
            bar.close()
    advisors.finish()
    rooms = list(pipeline.states)
    state = pipeline.states[rooms[0]] if rooms else RoomState(room or path.stem)
    sid = pipeline.sessions.get(state.room)
    if store is not None:
        advisors.store(store)
    if store is not None and sid is not None:
        store.end_session(
            sid, clock.now_ms(),
            {"pipeline": pipeline.stats.as_dict(), "replay_stats": _stats_dict(source.stats),
             **session_meta(advisors.engines.get(state.room), watch_only=state.room in advisors.watch_only)},
        )
    return ReplayResult(
        state=state, session_id=sid, stats=source.stats, pipeline=pipeline.stats.as_dict(),
        suggestions=advisors.suggestions, advisor_stats=advisors.stats(),
    )


class _ReplayAdvisors:
    """The live advisors on event time: one engine per room, ticked by a VirtualTicker before each event."""

    def __init__(
        self, cfg: Config, pipeline: Pipeline, *, script: str | None,
        on_suggestion: Callable[[Suggestion], None] | None,
    ) -> None:
        from bot.scheduler import VirtualTicker
        from bot.scripts import load_run_sheet

        self.cfg = cfg
        self.enabled = cfg.advisors.enabled
        self.pipeline = pipeline
        self.script = script
        self.on_suggestion = on_suggestion
        self.engines: dict[str, AdvisorEngine] = {}
        self.watch_only = frozenset(r.name for r in cfg.rooms if r.watch_only)
        self.suggestions: list[Suggestion] = []
        self._index: dict[str, int] = {}
        self.ticker = VirtualTicker()
        self.ticker.add_job("advisors", cfg.advisors.tick_s, self._tick)
        self._last_ts: int | None = None
        if self.enabled:
            load_run_sheet(script or cfg.advisors.script)  # a bad run-sheet fails before the replay starts

    def _engine(self, room: str) -> None:
        from bot.advisors.engine import build_engine

        configured = next((r.script for r in self.cfg.rooms if r.name == room), "")
        self.engines[room] = build_engine(
            room, self.cfg.advisors, script=self.script or configured, follow=True
        )

    def before_apply(self, ev: Event) -> None:
        if not self.enabled:
            return
        if ev.room not in self.engines and ev.room not in self.watch_only:
            self._engine(ev.room)
        if self._last_ts is not None:
            # What live runs after each analysed batch (answer cards), here after each event: deterministic.
            for room, engine in self.engines.items():
                st = self.pipeline.states.get(room)
                if st is not None and engine.started:  # the show starts at a tick, as it always did
                    self._add(engine.on_data(st, self._last_ts))
        self.ticker.advance(ev.received_ts)
        if self._last_ts is None or ev.received_ts > self._last_ts:
            self._last_ts = ev.received_ts

    def _tick(self, now: int) -> None:
        for room, engine in self.engines.items():
            st = self.pipeline.states.get(room)
            if st is None:
                continue
            self._add(engine.tick(st, now))
            for change in engine.drain_changes():
                i = self._index.get(change.id)
                if i is not None and "vote" in change.data:
                    old = self.suggestions[i]  # a vote closed: its result joins what the replay stores
                    vote = change.data["vote"]
                    self.suggestions[i] = dataclasses.replace(old, data={**old.data, "vote": vote})

    def _add(self, new: list[Suggestion]) -> None:
        for s in new:
            self._index[s.id] = len(self.suggestions)
            self.suggestions.append(s)
            if self.on_suggestion is not None:
                self.on_suggestion(s)

    def finish(self) -> None:
        """One last tick after the final event, so its second is judged too."""
        if self.enabled and self._last_ts is not None:
            self.ticker.advance(self._last_ts + round(self.cfg.advisors.tick_s * 1000))
        if self.ticker.errors:
            log.error("advisor ticks failed %d time(s) during this replay (tracebacks above); "
                      "its suggestions are incomplete", sum(self.ticker.errors.values()))

    def store(self, store: Store) -> None:
        from bot.dispatcher import StoreSink

        sink = StoreSink(store, self.pipeline.sessions.get)
        for s in self.suggestions:
            sid = self.pipeline.sessions.get(s.room)
            if sid is not None:
                sink.write_now(sid, s)

    def stats(self) -> dict[str, dict[str, Any]]:
        if self._last_ts is None:
            return {}
        return {room: e.stats(self._last_ts) for room, e in self.engines.items()}


def _stats_dict(stats: object) -> dict[str, object]:
    keys = ("path", "format", "encoding", "lines_read", "events")
    out: dict[str, object] = {k: getattr(stats, k, None) for k in keys}
    out["path"] = str(out["path"])
    out["skipped"] = dict(getattr(stats, "skipped", {}) or {})
    return out


def _progress_bar(path: Path) -> Any:
    from tqdm import tqdm

    try:
        with path.open("rb") as f:
            total = sum(1 for _ in f)
    except OSError:
        total = None
    # disable=None: no bar when stderr is not a terminal (a pipe or a CI log gets the summary only).
    return tqdm(total=total, unit="条", desc=path.name, file=sys.stderr, leave=False, mininterval=0.5, disable=None)
