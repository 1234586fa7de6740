"""The host-screen web app: `/` host view, `/control` field-control view, `/ws` hub, `/static/` assets.

Security (DESIGN.md *Interfaces*: web security):

- Bound to loopback and no token set, anyone on this machine may view and control. The Host header
  must then name loopback too, so a page on another site that re-points its DNS name at 127.0.0.1
  (DNS rebinding) is refused.
- Bound to any other address, `screen.token` is required to view and `screen.control_token` to
  act; ScreenServer refuses to start without them. Tokens come as `?token=…` and are compared in
  constant time. They are never logged: the access log writes the path without its query string.
- `/ws` refuses a browser `Origin` that is not the page's own host, so another site open in the
  host's browser cannot drive the control view. Inbound frames are capped at 4 KiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from bot.clock import Clock, SystemClock
from bot.errors import ConfigError, SinkError
from bot.outputs.screen.hub import ActionHandler, Hub, SnapshotProvider, SnapshotSteps
from bot.outputs.screen.protocol import MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from bot.advisors.base import Suggestion
    from bot.config import ScreenConfig

log = logging.getLogger(__name__)

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
_WILDCARD = frozenset({"0.0.0.0", "::", ""})

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def static_dir() -> Path:
    """The packaged static assets (host.html, control.html, css, js, svg)."""
    return Path(str(resources.files("bot.outputs.screen").joinpath("static")))


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; the wildcard addresses are *not* loopback (they listen everywhere)."""
    h = host.strip().strip("[]").lower()
    if h in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


class Right(StrEnum):
    VIEW = "view"
    CONTROL = "control"


@dataclass(frozen=True, slots=True)
class AccessGuard:
    """Decides who may view and who may act, from the bind address and the two tokens."""

    loopback: bool
    token: str
    control_token: str

    def _matches(self, supplied: str, secret: str) -> bool:
        return bool(secret) and hmac.compare_digest(supplied.encode(), secret.encode())

    def rights(self, request: web.Request) -> set[Right]:
        supplied = request.query.get("token", "")
        control = self._matches(supplied, self.control_token)
        view = control or self._matches(supplied, self.token) or (self.loopback and not self.token)
        if not control and view and self.loopback and not self.control_token:
            control = True
        out: set[Right] = set()
        if view:
            out.add(Right.VIEW)
        if control:
            out.add(Right.CONTROL)
        return out

    def host_ok(self, request: web.Request) -> bool:
        """Off loopback tokens protect us; on loopback the Host must be loopback (DNS rebinding)."""
        if not self.loopback:
            return True
        host = request.url.host or ""
        return is_loopback(host)

    @staticmethod
    def origin_ok(request: web.Request) -> bool:
        """A browser's Origin must be this page's own scheme-less host:port; no Origin = not a browser."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        try:
            o = URL(origin)
        except ValueError:
            return False
        if o.scheme not in ("http", "https") or not o.host:
            return False  # "null" (sandboxed frames, file://) and anything exotic
        own = request.url
        return (o.host.lower(), o.port) == ((own.host or "").lower(), own.port)


class _AccessLogger(AbstractAccessLogger):
    """Method, path and status only: the query string may carry a token and is never written."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            "screen %s %s %s %.1fms", request.method, request.path, response.status, time * 1000
        )


class _Refusals:
    """Counts refused requests; logs the first of each (reason, peer) so a bad tablet can't flood the log."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._seen: set[tuple[str, str]] = set()

    def refuse(self, request: web.Request, reason: str, status: int, text: str) -> web.Response:
        self.counts[reason] += 1
        peer = request.remote or "?"
        if (reason, peer) not in self._seen and len(self._seen) < 1000:
            self._seen.add((reason, peer))
            log.warning("screen refused %s %s from %s: %s", request.method, request.path, peer, reason)
        return web.Response(status=status, text=text, content_type="text/plain", charset="utf-8")


HUB_KEY = web.AppKey("hub", Hub)
GUARD_KEY = web.AppKey("guard", AccessGuard)
REFUSALS_KEY = web.AppKey("refusals", _Refusals)


@web.middleware
async def _security(request: web.Request, handler: Any) -> web.StreamResponse:
    guard = request.app[GUARD_KEY]
    if not guard.host_ok(request):
        return request.app[REFUSALS_KEY].refuse(
            request, "host", 421, "主机名不正确：请用 http://127.0.0.1 打开"
        )
    response: web.StreamResponse = await handler(request)
    if not isinstance(response, web.WebSocketResponse):
        for k, v in _SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
    return response


async def _page(request: web.Request, name: str, right: Right) -> web.StreamResponse:
    guard = request.app[GUARD_KEY]
    if right not in guard.rights(request):
        hint = "场控口令" if right is Right.CONTROL else "口令"
        return request.app[REFUSALS_KEY].refuse(
            request, f"no {right} token", 403, f"需要{hint}：请使用带 ?token=… 的完整地址打开"
        )
    return web.FileResponse(static_dir() / name)


async def host_page(request: web.Request) -> web.StreamResponse:
    return await _page(request, "host.html", Right.VIEW)


async def control_page(request: web.Request) -> web.StreamResponse:
    return await _page(request, "control.html", Right.CONTROL)


async def ws_handler(request: web.Request) -> web.StreamResponse:
    guard = request.app[GUARD_KEY]
    refusals = request.app[REFUSALS_KEY]
    if not guard.origin_ok(request):
        return refusals.refuse(request, "origin", 403, "来源不被允许")
    rights = guard.rights(request)
    if Right.VIEW not in rights:
        return refusals.refuse(request, "no view token", 403, "需要口令")
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=20.0, compress=False)
    await ws.prepare(request)
    await request.app[HUB_KEY].serve(ws, can_control=Right.CONTROL in rights, peer=request.remote or "?")
    return ws


async def _close_sockets(app: web.Application) -> None:
    await app[HUB_KEY].close_all(WSCloseCode.GOING_AWAY, "server shutdown")


async def _run_snapshots(hub: Hub) -> None:
    """Outermost wrapper of the snapshot task: a crash is logged (pages then show the stale banner)."""
    try:
        await hub.run_snapshots()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("screen snapshot loop crashed; pages will show stale data")


async def _snapshot_loop(app: web.Application) -> AsyncIterator[None]:
    # The 2 Hz loop lives exactly as long as the app serves (aiohttp examples/background_tasks.py).
    task = asyncio.create_task(_run_snapshots(app[HUB_KEY]), name="screen-snapshots")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def make_app(hub: Hub, guard: AccessGuard) -> web.Application:
    """The aiohttp application; state lives under typed AppKeys."""
    app = web.Application(middlewares=[_security], client_max_size=64 * 1024)
    app[HUB_KEY] = hub
    app[GUARD_KEY] = guard
    app[REFUSALS_KEY] = _Refusals()
    app.router.add_get("/", host_page)
    app.router.add_get("/control", control_page)
    app.router.add_get("/ws", ws_handler)
    app.router.add_static("/static/", static_dir(), follow_symlinks=False, append_version=False)
    app.cleanup_ctx.append(_snapshot_loop)
    app.on_shutdown.append(_close_sockets)
    return app


class ServerState(StrEnum):
    NEW = "new"  # built, start() not called
    RUNNING = "running"  # listening, snapshot loop running
    STOPPED = "stopped"  # stop() finished; build a new server to run again


class ScreenServer:
    """The host screen as a sink: an AppRunner + TCPSite inside our own lifecycle (not run_app)."""

    def __init__(
        self,
        *,
        snapshot_provider: SnapshotProvider,
        action_handler: ActionHandler,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str = "",
        control_token: str = "",
        clock: Clock | None = None,
        snapshot_hz: float = 2.0,
        snapshot_steps: SnapshotSteps | None = None,
    ) -> None:
        loopback = is_loopback(host)
        if not loopback:
            if not token:
                raise ConfigError(
                    f"the screen is bound to {host}, which other machines can reach: set screen.token "
                    "(and screen.control_token), or bind to 127.0.0.1",
                    key="screen.token",
                )
            if not control_token:
                raise ConfigError(
                    f"the screen is bound to {host}: set screen.control_token for control actions",
                    key="screen.control_token",
                )
        if token and token == control_token:
            raise ConfigError("must differ from screen.token (viewers must not get control)",
                              key="screen.control_token")
        self.host = host
        self.port = port
        self.guard = AccessGuard(loopback=loopback, token=token, control_token=control_token)
        self.hub = Hub(
            snapshot_provider=snapshot_provider, action_handler=action_handler, clock=clock or SystemClock(),
            snapshot_hz=snapshot_hz, snapshot_steps=snapshot_steps,
        )
        self.app = make_app(self.hub, self.guard)
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._state = ServerState.NEW

    @classmethod
    def from_config(
        cls, cfg: ScreenConfig, *, snapshot_provider: SnapshotProvider, action_handler: ActionHandler,
        clock: Clock | None = None, snapshot_steps: SnapshotSteps | None = None,
    ) -> ScreenServer:
        return cls(
            snapshot_provider=snapshot_provider, action_handler=action_handler, host=cfg.host, port=cfg.port,
            token=cfg.token, control_token=cfg.control_token, clock=clock, snapshot_hz=cfg.snapshot_hz,
            snapshot_steps=snapshot_steps,
        )

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def running(self) -> bool:
        return self._state is ServerState.RUNNING

    @property
    def url(self) -> str:
        """Base URL of the host view (loopback when bound to a wildcard address); no token in it."""
        if self._bound_port is None:
            raise RuntimeError("ScreenServer is not started; the URL is known after start()")
        host = "127.0.0.1" if self.host in _WILDCARD else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._bound_port}/"

    @property
    def control_url(self) -> str:
        return self.url + "control"

    async def start(self) -> None:
        if self._state is ServerState.RUNNING:
            raise RuntimeError("ScreenServer is already running")
        if self._state is ServerState.STOPPED:
            raise RuntimeError("ScreenServer cannot be restarted after stop(); build a new one")
        runner = web.AppRunner(self.app, access_log_class=_AccessLogger, handle_signals=False,
                               shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise SinkError(
                f"host screen cannot listen on {self.host}:{self.port}: {e.strerror or e}"
            ) from None
        self._runner = runner
        addresses = runner.addresses
        self._bound_port = int(addresses[0][1]) if addresses else self.port
        self._state = ServerState.RUNNING
        log.info("host screen listening on %s (loopback=%s)", self.url, self.guard.loopback)

    async def stop(self) -> None:
        """Close every page with GOING_AWAY, then stop listening. Safe to call twice."""
        if self._state is not ServerState.RUNNING:
            return
        self._state = ServerState.STOPPED
        await self.hub.close_all(WSCloseCode.GOING_AWAY, "server shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("host screen stopped")

    async def __aenter__(self) -> ScreenServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- output -----------------------------------------------------------------------------------

    def publish_suggestion(self, room: str, suggestion: dict[str, Any]) -> None:
        """Push a suggestion (Suggestion.to_json()) to every page now; a later publish updates it."""
        self.hub.publish_suggestion(room, suggestion)

    def publish_status(self, fields: dict[str, Any], room: str | None = None) -> None:
        """Push a status notice (e.g. {"message": "数据源重连中"}) to every page."""
        self.hub.publish_status(fields, room)

    async def send(self, suggestion: Suggestion) -> None:
        """Sink protocol: a Suggestion from the dispatcher goes to every page immediately."""
        self.hub.publish_suggestion(suggestion.room, suggestion.to_json())

    @property
    def clients(self) -> int:
        return len(self.hub.clients)
