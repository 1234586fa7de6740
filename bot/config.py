"""Configuration: one TOML file → frozen, validated pydantic models (the only config path).

A config file may hold only the sections it changes; everything else takes the defaults below,
which `config/livebot.toml` mirrors key for key (a test keeps them equal). An unknown key or a bad
value raises ConfigError naming the dotted key, e.g. ``rooms[0].sources[0].rate``.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bot.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class PrivacyConfig(_Section):
    store_names: bool = False
    """Keep viewer nicknames in Events and the store. Off by default (PIPL: comments are personal data)."""


class ClassifierConfig(_Section):
    name: Literal["rules", "snownlp", "transformer"] = "rules"
    """Which classifier analyses comments: rules (fast lexicon/regex), snownlp (baseline), transformer."""
    model: str = ""
    """transformer only: a local directory or hub name; empty = the model shipped with livebot."""
    allow_hub: bool = False
    """transformer only: allow loading `model` from the HuggingFace hub (needs network access)."""
    threads: int = Field(2, ge=1, le=64)
    """Torch threads for the transformer classifier."""
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


SourceConfig = Annotated[SimulatorSourceConfig | ReplaySourceConfig, Field(discriminator="kind")]


def _default_sources() -> tuple[SourceConfig, ...]:
    return (SimulatorSourceConfig(),)


class RoomConfig(_Section):
    name: str = Field("demo", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    """Room key used in logs, the store (session id) and the host screen."""
    sources: tuple[SourceConfig, ...] = Field(default_factory=_default_sources, min_length=1)
    """One or more sources; several sources make one merged multi-platform room."""


def _default_rooms() -> tuple[RoomConfig, ...]:
    return (RoomConfig(),)


class Config(_Section):
    data_dir: str = "./data"
    """Directory for the SQLite store and the viewer-id salt."""
    privacy: PrivacyConfig = PrivacyConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    pipeline: PipelineConfig = PipelineConfig()
    store: StoreConfig = StoreConfig()
    status: StatusConfig = StatusConfig()
    screen: ScreenConfig = ScreenConfig()
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
        elif part in ("simulator", "replay") and out.endswith("]"):
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
        return Config.model_validate(data)
    except ValidationError as err:
        key, msg = _first_error(err)
        extra = len(err.errors()) - 1
        if extra:
            msg += f" (and {extra} more problem{'s' if extra > 1 else ''})"
        raise ConfigError(msg, key=key, file=file) from None


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
