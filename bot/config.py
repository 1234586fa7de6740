"""Configuration: one TOML file → frozen, validated pydantic models (the only config path).

A config file may hold only the sections it changes; everything else takes the defaults below,
which `config/livebot.toml` mirrors key for key (a test keeps them equal). An unknown key or a bad
value raises ConfigError naming the dotted key, e.g. ``rooms[0].sources[0].rate``.
"""

from __future__ import annotations

import ipaddress
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.errors import ConfigError
from bot.outputs.alerts.config import AlertsConfig


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class PrivacyConfig(_Section):
    store_names: bool = False
    """Keep viewer nicknames in Events and the store. Off by default (PIPL: comments are personal data)."""


class ClassifierConfig(_Section):
    name: Literal["rules", "snownlp", "transformer"] = "rules"
    """Which classifier analyses comments: rules (lexicon/regex, ~3x the transformer's throughput, the better
    live-comment sentiment macro-F1), transformer (the shipped model with the rules fused in: calibrated
    probabilities, better on questions and reviews), snownlp (the baseline). README "Which classifier"."""
    model: str = ""
    """transformer only: a local directory or hub name; empty = the model shipped with livebot."""
    allow_hub: bool = False
    """transformer only: allow loading `model` from the HuggingFace hub (needs network access)."""
    threads: int = Field(2, ge=1, le=64)
    """transformer only: inference threads; each runs its share of a batch with torch's own threads at 1."""
    review_below: float = Field(0.85, ge=0.0, le=1.0)
    """Suggestions resting on analyses less confident than this are marked for human review."""


class PipelineConfig(_Section):
    queue_size: int = Field(20000, ge=100, le=10_000_000)
    """Bounded queue between sources and the analyzer, in events."""
    batch_size: int = Field(128, ge=1, le=4096)
    """Most comments analysed in one batch."""
    max_wait_ms: int = Field(20, ge=0, le=5000)
    """Longest a comment waits for its batch to fill."""
    overflow: Literal["shed_analysis", "block"] = "shed_analysis"
    """When the queue is full: shed_analysis = store and count the event without NLP (live default,
    never blocks a source); block = wait for room (replay)."""
    fallback_classifier: Literal["rules", "none"] = "rules"
    """Live: while analysis is behind, analyse with this fast classifier instead of the configured one
    (only when they differ); none = analyse with the configured one until the queue is full."""
    degrade_lag_ms: int = Field(1000, ge=50, le=600_000)
    """Live: a batch whose oldest comment waited this long means analysis is behind: `fallback_classifier`
    takes over (without one, or when twice as late, only every n-th comment is analysed) until the
    queue has drained."""
    store_backlog: int = Field(50_000, ge=100, le=10_000_000)
    """Most events waiting for the SQLite writer; when full the pipeline waits for the store (batches
    waiting meanwhile are written together)."""


class StoreConfig(_Section):
    enabled: bool = True
    """Write sessions, events and analyses to SQLite."""
    path: str = ""
    """SQLite file; empty = <data_dir>/livebot.db."""


class StatusConfig(_Section):
    terminal: bool = True
    """Print a one-line live status per room in the terminal."""
    interval_s: float = Field(2.0, ge=0.2, le=3600)
    """Seconds between status lines."""


class ScreenConfig(_Section):
    enabled: bool = True
    """Serve the host screen (/) and the field-control view (/control) while `livebot run` runs."""
    host: str = Field("127.0.0.1", min_length=1, max_length=255)
    """Address to bind. Anything but loopback (127.0.0.1, ::1, localhost) requires `token` and
    `control_token`, because the screen then is reachable from the network."""
    port: int = Field(8765, ge=0, le=65535)
    """TCP port; 0 picks a free port (tests)."""
    token: str = Field("", max_length=256)
    """Viewing token, passed as `?token=…`; required off loopback. Never logged."""
    control_token: str = Field("", max_length=256)
    """Token for control actions (`/control?token=…`); required off loopback, must differ from `token`."""
    snapshot_hz: float = Field(2.0, ge=0.2, le=10.0)
    """Room snapshots pushed to every page per second (suggestions are pushed immediately)."""


class ScriptSwitchConfig(_Section):
    hold_s: int = Field(2, ge=0, le=120)
    """A candidate segment's trigger must keep firing this many seconds before a switch is suggested."""
    exit_ratio: float = Field(0.6, ge=0.1, le=1.0)
    """Hysteresis: the current segment keeps the floor while one of its triggers reads at least this
    share of its threshold."""
    resuggest_s: int = Field(120, ge=0, le=3600)
    """A switch to the same segment that was ignored or dismissed is not suggested again for this long."""
    ttl_s: int = Field(60, ge=5, le=3600)
    """A pending switch suggestion expires after this many seconds."""
    need_match_below: float = Field(0.4, ge=0.0, le=1.0)
    """Need match: when less than this share of the last minute's questions are about topics the current
    segment answers, the segment answering most of them is suggested (0 = off)."""
    need_match_min_questions: int = Field(5, ge=1, le=10_000)
    """Need match is judged only with at least this many questions (known topic) in the last minute."""
    need_match_hold_s: int = Field(20, ge=0, le=600)
    """Need match must stay low this many seconds before a switch is suggested on it."""


class CouponsConfig(_Section):
    mode: Literal["confirm", "auto"] = "confirm"
    """confirm: the host/operator marks each drop as done; auto: the drop happens at the countdown."""
    cadence_s: int = Field(300, ge=30, le=7200)
    """Base interval between coupon drops, seconds (leading rooms: about every 5 minutes)."""
    budget: int = Field(10, ge=0, le=1000)
    """Most coupon drops in one session."""
    per_hour: int = Field(8, ge=0, le=120)
    """Most coupon drops in any hour."""
    cooldown_s: int = Field(90, ge=0, le=3600)
    """Least time between two drops, also when a trigger pulls one forward."""
    lead_s: int = Field(30, ge=0, le=600)
    """Countdown: a drop is announced this many seconds before it is due."""
    items: tuple[str, ...] = ("限时优惠券",)
    """Coupons used in turn when the run-sheet lists none."""
    hesitation_share: float = Field(0.12, ge=0.01, le=1.0)
    """Price hesitation that pulls the next drop forward: negative or confused comments about price or
    coupons, as a share of analysed comments in `hesitation_window_s`."""
    hesitation_window_s: int = Field(60, ge=10, le=300)
    """Window for price hesitation, seconds."""
    hesitation_min_comments: int = Field(10, ge=1, le=100_000)
    """Price hesitation needs at least this many analysed comments in its window."""
    viewer_drop_share: float = Field(0.15, ge=0.01, le=1.0)
    """A viewer count this share below its peak of the last `viewer_drop_window_s` pulls the next drop forward."""
    viewer_drop_window_s: int = Field(120, ge=10, le=3600)
    """Window for the viewer-count peak, seconds."""
    viewer_drop_min_online: int = Field(20, ge=1, le=10_000_000)
    """Viewer drops in rooms whose peak is below this are ignored (too small to mean anything)."""
    ttl_s: int = Field(60, ge=5, le=3600)
    """confirm mode: a drop not confirmed this many seconds after it was due expires."""


class PromptsConfig(_Section):
    target_per_min: float = Field(4.0, ge=0.5, le=20.0)
    """Interaction prompts per minute to aim for (leading rooms: 3–5)."""
    min_per_min: float = Field(3.0, ge=0.0, le=20.0)
    """Lower end of the acceptable range; reports compare the achieved rate with it."""
    max_per_min: float = Field(5.0, ge=0.5, le=30.0)
    """Never more prompts per minute than this, also when catching up."""
    min_chat_lines: int = Field(3, ge=0, le=10_000)
    """Comments needed since the last prompt before a regular prompt (like chat-bot timers)."""
    idle_after_s: int = Field(30, ge=5, le=3600)
    """An idle prompt fires after this many seconds without a comment."""
    no_repeat_s: int = Field(300, ge=0, le=7200)
    """The same prompt is not used again within this many seconds (if the pool allows)."""
    coupon_gap_s: int = Field(20, ge=0, le=600)
    """No prompt within this many seconds of a coupon drop (either side)."""
    response_s: int = Field(30, ge=5, le=300)
    """Comments matching a prompt within this many seconds count as its response."""
    ttl_s: int = Field(15, ge=5, le=600)
    """A pending prompt suggestion expires after this many seconds."""

    @model_validator(mode="after")
    def _ordered(self) -> PromptsConfig:
        if not self.min_per_min <= self.target_per_min <= self.max_per_min:
            raise ValueError("need min_per_min <= target_per_min <= max_per_min")
        return self


class AlertRulesConfig(_Section):
    cooldown_s: int = Field(300, ge=10, le=86_400)
    """One alert per rule (and topic) per this many seconds; firings in between are aggregated."""
    min_comments: int = Field(15, ge=1, le=100_000)
    """Share-based rules need at least this many analysed comments in the last 60 s."""
    negative_share: float = Field(0.35, ge=0.05, le=1.0)
    """Negative surge: share of negative comments in the last 60 s."""
    confusion_rate: float = Field(0.25, ge=0.05, le=1.0)
    """Confusion surge: share of confused questions about one topic in the last 60 s."""
    collapse_ratio: float = Field(0.3, ge=0.01, le=1.0)
    """Rate collapse: comments/min of the last 60 s below this share of the 4 minutes before."""
    collapse_min_per_min: float = Field(20.0, ge=1.0, le=100_000.0)
    """Rate collapse is only judged when the earlier rate was at least this many comments/min."""
    distrust_min: int = Field(2, ge=1, le=10_000)
    """Distrust words (骗/假货/退款…): alert at this many such comments in the last 60 s."""
    source_down_s: int = Field(30, ge=1, le=3600)
    """Source down: alert when a source has been disconnected this many seconds."""
    compliance_min: int = Field(2, ge=1, le=10_000)
    """Compliance: alert at this many comments in the last 60 s that quote an advertising-law absolute term
    or a banned category (nlp/lexicons/compliance.yaml), e.g. viewers repeating 全网最低."""
    platform_lag_s: float = Field(5.0, ge=0.5, le=600.0)
    """Platform lag: alert when a platform's comments reach livebot this many seconds (median of the last 60 s)
    after viewers sent them; in a multi-platform room the alert names the gap to the fastest platform."""
    platform_lag_min_comments: int = Field(5, ge=1, le=100_000)
    """Platform lag is judged on at least this many timestamped comments of the platform in the last 60 s."""
    ttl_s: int = Field(300, ge=10, le=86_400)
    """A pending alert expires after this many seconds."""


class TimingConfig(_Section):
    opening_deadline_s: int = Field(180, ge=30, le=1800)
    """The opening should be over after this many seconds (a run-sheet's `opening.deadline_s` wins)."""
    session_warn_before_min: int = Field(10, ge=1, le=240)
    """Warn this many minutes before the run-sheet's planned length (`show.planned_minutes`)."""
    rhythm_after_min: int = Field(30, ge=5, le=240)
    """Suggest a change of rhythm after this many minutes in one segment (attention falls after ~30 min)."""
    ttl_s: int = Field(120, ge=10, le=3600)
    """A pending timing nudge (overrun, opening, session length, rhythm) expires after this many seconds."""


class AnswerCardsConfig(_Section):
    window_s: int = Field(30, ge=5, le=300)
    """Questions about one topic are counted over this many seconds."""
    min_questions: int = Field(3, ge=1, le=1000)
    """A topic's answer card is offered once this many questions about it came in within `window_s`
    (a direct @主播 question counts twice)."""
    cooldown_s: int = Field(120, ge=0, le=3600)
    """The same card is not offered again for this long after it was offered."""
    ttl_s: int = Field(90, ge=5, le=3600)
    """A card nobody used expires after this many seconds."""


class ChecksConfig(_Section):
    max_discount: float = Field(0.30, gt=0.0, lt=1.0)
    """Run-sheet offers taking off more than this share are flagged (deep discounts lowered the average order
    value in the seed cases)."""
    max_concurrent_offers: int = Field(3, ge=1, le=50)
    """More run-sheet offers than this running in one segment are flagged."""
    compliance_lexicon: str = Field("", max_length=4096)
    """Compliance lexicon (YAML, the format of nlp/lexicons/compliance.yaml) for run-sheet checks and comment
    flags; empty = the shipped one."""


class AdvisorsConfig(_Section):
    enabled: bool = True
    """Run the advisors (script switch, coupons, prompts, alerts) on every room."""
    script: str = Field("apparel", min_length=1, max_length=255)
    """Default run-sheet: a name in scripts_library/ (apparel, beauty, food) or a path to a YAML file."""
    tick_s: float = Field(1.0, ge=0.1, le=60.0)
    """Seconds between advisor ticks (event time in replay)."""
    review_below: float = Field(0.85, ge=0.0, le=1.0)
    """A suggestion whose confidence is below this is marked needs_review."""
    promo_per_min: int = Field(3, ge=1, le=60)
    """Most promotional pushes (coupon drops and product/price announcements) in any minute."""
    escalate_after_s: int = Field(15, ge=0, le=3600)
    """A suggestion still pending this many seconds after it was made goes to the field-control chat (alert
    rule `escalation`, with the original's reason); 0 = never."""
    escalate_kinds: tuple[Literal["script_switch", "coupon", "prompt"], ...] = ("script_switch", "coupon")
    """Suggestion kinds that escalate (prompts expire quickly and come often: off by default)."""
    script_switch: ScriptSwitchConfig = ScriptSwitchConfig()
    coupons: CouponsConfig = CouponsConfig()
    prompts: PromptsConfig = PromptsConfig()
    alerts: AlertRulesConfig = AlertRulesConfig()
    timing: TimingConfig = TimingConfig()
    answer_cards: AnswerCardsConfig = AnswerCardsConfig()
    checks: ChecksConfig = ChecksConfig()


class SimulatorSourceConfig(_Section):
    kind: Literal["simulator"] = "simulator"
    seed: int = 7
    """Same seed, same room: demos and tests are reproducible."""
    rate: float = Field(5.0, gt=0, le=2000)
    """Average comments per second outside bursts."""


class ReplaySourceConfig(_Section):
    kind: Literal["replay"] = "replay"
    path: str
    """Log file: JSONL, CSV, Bilibili XML or plain text."""
    speed: float = Field(1.0, gt=0, le=10_000)
    """1 = real time, N = N× real time."""


class _LiveSourceConfig(_Section):
    """Reconnect settings shared by the sources that hold a network connection."""

    reconnect_base_s: float = Field(1.0, gt=0, le=60)
    """First reconnect delay, seconds; it doubles with every failed attempt (with jitter)."""
    reconnect_max_s: float = Field(30.0, gt=0, le=600)
    """Longest reconnect delay, seconds."""

    @model_validator(mode="after")
    def _ordered_backoff(self) -> Self:
        if self.reconnect_base_s > self.reconnect_max_s:
            raise ValueError("need reconnect_base_s <= reconnect_max_s")
        return self


def _url_list(value: object) -> object:
    """`ws_url` may be one string ("" = none) or a list of them."""
    if isinstance(value, str):
        return (value,) if value else ()
    return value


class BilibiliSourceConfig(_LiveSourceConfig):
    kind: Literal["bilibili"] = "bilibili"
    room_id: int = Field(ge=1, le=10**12)
    """Room number from the live URL (live.bilibili.com/<room_id>); short ids are resolved."""
    cookie_file: str = Field("", max_length=4096)
    """File holding a logged-in browser's whole Cookie header (SESSDATA=…; bili_jct=…; buvid3=…), mode 0600.
    Empty = anonymous (viewer names and ids hidden). The cookie itself never goes in the TOML."""
    cookie_env: str = Field("", max_length=128, pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")
    """Name of an environment variable holding the Cookie header, instead of `cookie_file`."""
    heartbeat_s: float = Field(30.0, ge=1, le=120)
    """Seconds between heartbeats on the danmaku socket (Bilibili expects 30)."""
    auth_timeout_s: float = Field(5.0, gt=0, le=60)
    """The server must answer AUTH within this many seconds, else reconnect with a new bootstrap."""
    receive_timeout_s: float = Field(0.0, ge=0, le=600)
    """Silence (seconds) that counts as a dead link; 0 = heartbeat_s + 5."""
    api_base: str = Field("https://api.live.bilibili.com", pattern=r"^https?://\S+$")
    """Live API base for the bootstrap; a relay or proxy may stand in (nav and buvid requests follow)."""
    ws_url: Annotated[tuple[str, ...], BeforeValidator(_url_list)] = ()
    """Danmaku websocket URL(s) replacing the bootstrap's host list (rotated); "" = the bootstrap's."""
    trust_env: bool = False
    """Honour HTTP(S)_PROXY / NO_PROXY from the environment for the bootstrap and the websocket."""

    @field_validator("ws_url")
    @classmethod
    def _ws_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("ws://", "wss://")):
                raise ValueError(f"must start with ws:// or wss://, got {url!r}")
        return value

    @model_validator(mode="after")
    def _one_cookie(self) -> Self:
        if self.cookie_file and self.cookie_env:
            raise ValueError("set cookie_file or cookie_env, not both")
        if self.receive_timeout_s and self.receive_timeout_s <= self.heartbeat_s:
            raise ValueError("receive_timeout_s must be longer than heartbeat_s (or 0 for the default)")
        return self


class DouyinSourceConfig(_LiveSourceConfig):
    kind: Literal["douyin"] = "douyin"
    url: str = Field("ws://127.0.0.1:8888/", pattern=r"^wss?://\S+$")
    """Push socket of DouyinBarrageGrab (its ws port, 8888 unless changed), on this PC or another one."""
    douyin_room: str = Field("", max_length=128)
    """Keep only this Douyin room: web room id (live.douyin.com/<id>), the anchor's 抖音号 (直播伴侣),
    user id or sec uid. Empty = every room the tool forwards."""


class GenericWsSourceConfig(_LiveSourceConfig):
    kind: Literal["generic_ws"] = "generic_ws"
    url: str = Field(pattern=r"^wss?://\S+$")
    """Upstream that serves generic-JSON events; livebot connects out. Every event goes to this room."""
    token: str = Field("", max_length=256)
    """Sent as `Authorization: Bearer <token>`; empty = none. Never logged."""


class GenericSourceConfig(_Section):
    kind: Literal["generic"] = "generic"
    match: tuple[str, ...] = Field(min_length=1)
    """Events pushed to the [ingest] listener that this room takes, as "platform:room" keys (the event's
    own `platform` and `room`), e.g. "kuaishou:3x9demo"; "platform:*" takes every room of a platform."""

    @field_validator("match")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for key in value:
            platform, sep, room = key.partition(":")
            if not sep or not platform.strip() or not room.strip():
                raise ValueError(f'each entry must read "platform:room", got {key!r}')
            out.append(f"{platform.strip().lower()}:{room.strip()}")
        dupes = sorted({k for k in out if out.count(k) > 1})
        if dupes:
            raise ValueError(f"repeated: {', '.join(dupes)}")
        return tuple(out)


SourceConfig = Annotated[
    SimulatorSourceConfig
    | ReplaySourceConfig
    | BilibiliSourceConfig
    | DouyinSourceConfig
    | GenericWsSourceConfig
    | GenericSourceConfig,
    Field(discriminator="kind"),
]
_SOURCE_KINDS = frozenset({"simulator", "replay", "bilibili", "douyin", "generic_ws", "generic"})
"""Discriminator tags pydantic inserts into error paths (left out of dotted keys)."""


def _default_sources() -> tuple[SourceConfig, ...]:
    return (SimulatorSourceConfig(),)


class RoomConfig(_Section):
    name: str = Field("demo", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    """Room key used in logs, the store (session id) and the host screen."""
    sources: tuple[SourceConfig, ...] = Field(default_factory=_default_sources, min_length=1)
    """One or more sources; several sources make one merged multi-platform room."""
    script: str = Field("", max_length=255)
    """Run-sheet of this room (a scripts_library name or a YAML path); empty = `advisors.script`."""
    watch_only: bool = False
    """A benchmark room (e.g. a competitor's public room): same pipeline and store, no suggestions or alerts;
    the screen and report show its questions, sentiment and promotion cadence next to ours."""


def _default_rooms() -> tuple[RoomConfig, ...]:
    return (RoomConfig(),)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or a wildcard address: reachable from outside


class IngestConfig(_Section):
    enabled: bool = False
    """Listen for generic-JSON events pushed by scrapers and plugins (ws://HOST:PORT/ingest); rooms take
    them with a source of kind "generic" and its `match` keys."""
    host: str = Field("127.0.0.1", min_length=1, max_length=255)
    """Address to bind. Anything but loopback requires `token`."""
    port: int = Field(8766, ge=0, le=65535)
    """TCP port; 0 picks a free port (tests)."""
    token: str = Field("", max_length=256)
    """Pushers send it as `Authorization: Bearer <token>` or `?token=`; needed off loopback. Never logged."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed to push (e.g. an extension page); a connection with any other Origin header
    is refused, so a web page cannot inject comments. Scrapers and plugins send no Origin."""


class BusConfig(_Section):
    url: str = ""
    """Where sources hand events to analysis: "" = the in-process queue (one machine); redis://HOST:PORT[/DB]
    (or rediss://, unix://) = Redis Streams shared by several processes or machines. `--bus` overrides."""
    role: Literal["all", "sources", "worker"] = "all"
    """With a shared bus: all = run the sources and analyse; sources = publish only; worker = analyse the
    rooms on the bus, run no sources. `--role` overrides."""
    prefix: str = Field("livebot:", min_length=1, max_length=64)
    """Key prefix in Redis (several installations can share one server with different prefixes)."""
    maxlen: int = Field(100_000, ge=1_000, le=100_000_000)
    """Approximate cap of each room's stream: entries trimmed before a worker read them are lost, so keep it
    above the longest backlog a room may build (100,000 = over 5 minutes at 300 comments/s)."""
    lease_ms: int = Field(10_000, ge=1_000, le=600_000)
    """A worker owns a room while it renews this lease; a dead worker's rooms move on after it lapses."""
    claim_idle_ms: int = Field(30_000, ge=1_000, le=3_600_000)
    """Entries pending (read, not stored and acknowledged) longer than this are claimed and processed again."""

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        v = v.strip()
        if v and v != "local" and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"unsupported bus {v!r}: use redis://HOST:PORT[/DB], or \"\" for the in-process queue")
        return v


class Config(_Section):
    data_dir: str = "./data"

    """Directory for the SQLite store and the viewer-id salt."""
    privacy: PrivacyConfig = PrivacyConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    pipeline: PipelineConfig = PipelineConfig()
    store: StoreConfig = StoreConfig()
    status: StatusConfig = StatusConfig()
    screen: ScreenConfig = ScreenConfig()
    advisors: AdvisorsConfig = AdvisorsConfig()
    alerts: AlertsConfig = AlertsConfig()
    ingest: IngestConfig = IngestConfig()
    bus: BusConfig = BusConfig()
    rooms: tuple[RoomConfig, ...] = Field(default_factory=_default_rooms, min_length=1)

    @model_validator(mode="after")
    def _unique_rooms(self) -> Config:
        names = [r.name for r in self.rooms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"room names must be unique, repeated: {', '.join(dupes)}")
        return self

    @property
    def store_path(self) -> Path:
        return Path(self.store.path) if self.store.path else Path(self.data_dir) / "livebot.db"


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _SOURCE_KINDS and out.endswith("]"):
            continue  # discriminated-union tag pydantic inserts into the path
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def _first_error(err: ValidationError) -> tuple[str, str]:
    e = err.errors()[0]
    key = _dotted(tuple(e["loc"]))
    if e["type"] == "extra_forbidden":
        return key, "unknown key"
    msg = e["msg"]
    if "input" in e and e["type"] != "missing" and not isinstance(e["input"], dict):
        msg += f" (got {e['input']!r})"
    return key, msg


def parse_config(data: dict[str, Any], *, file: str | None = None) -> Config:
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        key, msg = _first_error(err)
        extra = len(err.errors()) - 1
        if extra:
            msg += f" (and {extra} more problem{'s' if extra > 1 else ''})"
        raise ConfigError(msg, key=key, file=file) from None
    _check_ingest(cfg, file)
    return cfg


def _check_ingest(cfg: Config, file: str | None) -> None:
    """Cross-section rules: generic rooms need the listener, one room per match key, a token off loopback."""
    ing = cfg.ingest
    if ing.enabled and not ing.token and not _is_loopback(ing.host):
        raise ConfigError(f"a token is required to listen on the non-loopback address {ing.host!r}",
                          key="ingest.token", file=file)
    claimed: dict[str, str] = {}
    for i, room in enumerate(cfg.rooms):
        for j, src in enumerate(room.sources):
            if not isinstance(src, GenericSourceConfig):
                continue
            if not ing.enabled:
                raise ConfigError('kind "generic" takes events pushed to the ingest listener: '
                                  "set [ingest] enabled = true",
                                  key=f"rooms[{i}].sources[{j}].kind", file=file)
            for key in src.match:
                if key in claimed and claimed[key] != room.name:
                    raise ConfigError(f"{key!r} is already claimed by room {claimed[key]!r}",
                                      key=f"rooms[{i}].sources[{j}].match", file=file)
                claimed[key] = room.name


def default_config_path() -> Path:
    """The shipped `config/livebot.toml` (package data `livebot_config`)."""
    return Path(str(resources.files("livebot_config").joinpath("livebot.toml")))


def load_config(path: str | Path | None = None) -> Config:
    """Load a TOML config file (or the shipped default); errors name the file and dotted key."""
    p = Path(path) if path is not None else default_config_path()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError("config file not found", file=str(p)) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror}", file=str(p)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8", file=str(p)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", file=str(p)) from None
    return parse_config(data, file=str(p))
