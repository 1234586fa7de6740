"""Run-sheets: one show's segments, triggers, prompt pools and coupon plan as YAML data (`scripts_library/`).

The format is documented in `scripts_library/README.md`. Files are validated on load by the pydantic models
below; every error becomes a `ScriptError` naming the file, the 1-based line and the dotted field. Lines come
from the YAML node tree (`yaml.compose`), so a pydantic location such as ``segments[2].triggers[0].value``
maps back to where that key is written.

Triggers are structured data (`metric`, `topic`, `window_s`, `op`, `value`, `min_comments`), not an
expression language: a run-sheet author can only say what `Trigger.measure` knows how to compute.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.errors import ScriptError

if TYPE_CHECKING:
    from bot.state import WindowStats

TOPICS: tuple[str, ...] = (
    "price", "size_fit", "shipping", "quality", "link_howto", "after_sales", "coupon", "stock", "usage",
    "host", "other",
)
"""Topics a segment can answer and a trigger can watch (the analyzer's topic set)."""

SCRIPT_SUFFIXES = (".yaml", ".yml")


class Metric(StrEnum):
    """What a trigger measures over its window (all rates are shares of analysed comments, 0..1)."""

    TOPIC_CONFUSION_RATE = "topic_confusion_rate"  # confused questions about `topic`
    TOPIC_SHARE = "topic_share"  # comments about `topic`, confused or not
    TOPIC_NEGATIVE_RATE = "topic_negative_rate"  # negative comments about `topic`
    CONFUSION_RATE = "confusion_rate"  # confused comments, any topic
    NEGATIVE_SHARE = "negative_share"
    POSITIVE_SHARE = "positive_share"
    BUYING_INTENT_RATE = "buying_intent_rate"  # 已拍 / 扣1 / 上车 …
    COMMENTS_PER_MIN = "comments_per_min"  # a rate, not a share


TOPIC_METRICS = frozenset({Metric.TOPIC_CONFUSION_RATE, Metric.TOPIC_SHARE, Metric.TOPIC_NEGATIVE_RATE})

_OPS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One trigger evaluated on one window."""

    value: float
    """The metric's value (a share 0..1, or comments per minute)."""
    count: int
    """Comments behind the value (e.g. confused size questions); 0 for comments_per_min."""
    comments: int
    """Analysed comments in the window (the evidence base)."""
    fired: bool
    strength: float
    """How far past the threshold, as a ratio (1.0 = exactly at it); 0 when not fired."""


class Trigger(_Model):
    metric: Metric
    """What to measure; topic_* metrics need `topic`."""
    topic: str | None = None
    """Topic for topic_* metrics (one of the analyzer's topics)."""
    window_s: int = Field(60, ge=10, le=300)
    """Window the metric is measured over, seconds."""
    op: Literal[">=", ">", "<=", "<"] = ">="
    value: float = Field(ge=0)
    """Threshold: a share 0..1 for rates, comments per minute for comments_per_min."""
    min_comments: int = Field(10, ge=0, le=100_000)
    """The trigger stays silent with fewer analysed comments than this in the window."""

    @field_validator("topic")
    @classmethod
    def _known_topic(cls, v: str | None) -> str | None:
        if v is not None and v not in TOPICS:
            raise ValueError(f"unknown topic {v!r}; one of: {', '.join(TOPICS)}")
        return v

    @model_validator(mode="after")
    def _topic_matches_metric(self) -> Trigger:
        if self.metric in TOPIC_METRICS and self.topic is None:
            raise ValueError(f"metric {self.metric} needs a topic")
        if self.metric not in TOPIC_METRICS and self.topic is not None:
            raise ValueError(f"metric {self.metric} takes no topic")
        if self.metric is not Metric.COMMENTS_PER_MIN and self.value > 1:
            raise ValueError(f"metric {self.metric} is a share between 0 and 1, got {self.value}")
        return self

    def measure(self, w: WindowStats) -> Measurement:
        """Evaluate on a window of RoomState (its `seconds` should equal `window_s`)."""
        n = w.analyzed
        count = 0
        m = self.metric
        if m is Metric.COMMENTS_PER_MIN:
            value = w.comments_per_min
        else:
            topic = self.topic or ""
            count = {
                Metric.TOPIC_CONFUSION_RATE: lambda: w.topic_confused.get(topic, 0),
                Metric.TOPIC_SHARE: lambda: w.topic_comments.get(topic, 0),
                Metric.TOPIC_NEGATIVE_RATE: lambda: w.topic_negative.get(topic, 0),
                Metric.CONFUSION_RATE: lambda: w.confused,
                Metric.NEGATIVE_SHARE: lambda: w.neg,
                Metric.POSITIVE_SHARE: lambda: w.pos,
                Metric.BUYING_INTENT_RATE: lambda: w.buying_intent,
            }[m]()
            value = count / n if n else 0.0
        fired = n >= self.min_comments and _OPS[self.op](value, self.value)
        if not fired:
            strength = 0.0
        elif self.op in (">=", ">"):
            strength = value / self.value if self.value > 0 else 2.0
        else:
            strength = self.value / value if value > 0 else 2.0
        return Measurement(value=value, count=count, comments=n, fired=fired, strength=strength)


class Segment(_Model):
    name: str = Field(min_length=1, max_length=40)
    """Shown to the host, e.g. 尺码答疑; unique within the run-sheet."""
    talking_points: tuple[str, ...] = ()
    """What to say in this segment (shown with a switch suggestion)."""
    answers_topics: tuple[str, ...] = ()
    """Viewer topics this segment answers; a switch suggestion names the hottest of them."""
    min_dwell_s: int = Field(60, ge=0, le=3600)
    """No switch away from this segment is suggested before it has run this long."""
    promotional: bool = False
    """A product/price announcement: switching here counts toward the promotional-push cap."""
    prompt_pools: tuple[str, ...] = ()
    """Prompt pools used while this segment runs; empty = every non-idle pool."""
    triggers: tuple[Trigger, ...] = ()
    """Any firing trigger makes this segment a switch candidate."""

    @field_validator("answers_topics")
    @classmethod
    def _known_topics(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in v if t not in TOPICS]
        if bad:
            raise ValueError(f"unknown topic {bad[0]!r}; one of: {', '.join(TOPICS)}")
        return v


_QUOTED = re.compile(r"[「“\"『]([^」”\"』]{1,12})[」”\"』]")
_TYPE_IN = re.compile(r"(?:扣|打|刷)\s*([0-9A-Za-z]{1,6})")


def default_match(text: str) -> tuple[str, ...]:
    """Response keywords implied by a prompt's text: 「想要」 → 想要, 扣1 → 1, 打666 → 666."""
    quoted = _QUOTED.findall(text)
    if quoted:
        return tuple(dict.fromkeys(quoted))
    return tuple(dict.fromkeys(_TYPE_IN.findall(text)))


class Prompt(_Model):
    text: str = Field(min_length=1, max_length=60)
    """What the host says, e.g. 想要的姐妹扣1."""
    match: tuple[str, ...] = ()
    """Comments containing one of these count as responses; empty = derived from the text (「…」, 扣X)."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"text": v} if isinstance(v, str) else v

    @property
    def keywords(self) -> tuple[str, ...]:
        return self.match or default_match(self.text)


class PromptPool(_Model):
    name: str = Field(min_length=1, max_length=40)
    idle: bool = False
    """Idle pools are used when the room goes quiet; the others at the regular cadence."""
    prompts: tuple[Prompt, ...] = Field(min_length=1)


class Milestone(_Model):
    comments: int = Field(ge=1, le=10_000_000)
    """Session comment count that triggers this drop."""
    item: str = Field(min_length=1, max_length=40)
    """What drops, e.g. 盲盒."""
    repeat: bool = False
    """Fire again every `comments` comments (100, 200, 300 …)."""


class CouponPlan(_Model):
    """Per-show coupon plan; a field left out takes the `[advisors.coupons]` default of the config."""

    mode: Literal["confirm", "auto"] | None = None
    """confirm: the host confirms each drop; auto: drops happen at the countdown."""
    cadence_s: int | None = Field(default=None, ge=30, le=7200)
    """Base interval between drops, seconds."""
    budget: int | None = Field(default=None, ge=0, le=1000)
    """Most drops in the whole show."""
    per_hour: int | None = Field(default=None, ge=0, le=120)
    """Most drops in any hour."""
    cooldown_s: int | None = Field(default=None, ge=0, le=3600)
    """Least time between two drops, also when a trigger pulls one forward."""
    items: tuple[str, ...] = ()
    """Coupons, used in turn, e.g. 满199减30券; empty = the config default."""
    milestones: tuple[Milestone, ...] = ()
    """Comment counts that pull a special drop forward (盲盒 after 100 comments)."""


class ShowMeta(_Model):
    name: str = Field(min_length=1, max_length=80)
    category: str = Field(min_length=1, max_length=20)
    """服饰, 美妆, 食品 …"""
    planned_minutes: int = Field(120, ge=1, le=24 * 60)
    description: str = ""


class RunSheet(_Model):
    """One show: segments in running order, prompt pools and the coupon plan."""

    show: ShowMeta
    segments: tuple[Segment, ...] = Field(min_length=1)
    prompt_pools: tuple[PromptPool, ...] = ()
    coupons: CouponPlan = CouponPlan()

    def segment(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def pools(self, *, idle: bool, names: Sequence[str] = ()) -> list[PromptPool]:
        """Pools of one kind; `names` (a segment's preference) narrows them when any match."""
        pools = [p for p in self.prompt_pools if p.idle is idle]
        if names:
            wanted = [p for p in pools if p.name in names]
            if wanted:
                return wanted
        return pools


@dataclass(frozen=True, slots=True)
class LoadedSheet:
    name: str
    """The file stem, e.g. apparel."""
    path: Path
    sheet: RunSheet


# -- loading ---------------------------------------------------------------------------------------


def _dotted(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def _line_of(root: yaml.Node, loc: Sequence[int | str]) -> int:
    """1-based line of the deepest YAML node that `loc` reaches (a mapping key's own line if it exists)."""
    node = root
    line = root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    line = key.start_mark.line + 1
                    node = value
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _check_duplicate_keys(node: yaml.Node, file: str, path: tuple[int | str, ...] = ()) -> None:
    # PyYAML silently keeps the last of two equal keys; in a run-sheet that hides a typo, so refuse.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise ScriptError(
                        "duplicate key", file=file, line=key.start_mark.line + 1,
                        field=_dotted((*path, key.value)),
                    )
                seen.add(key.value)
                _check_duplicate_keys(value, file, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, file, (*path, i))


def _compose(text: str, file: str) -> tuple[yaml.Node, Any]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ScriptError("the run-sheet is empty", file=file, line=1)
        _check_duplicate_keys(node, file)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ScriptError(f"invalid YAML: {e.problem or e.context}", file=file, line=line) from None
    except yaml.YAMLError as e:
        raise ScriptError(f"invalid YAML: {e}", file=file) from None
    finally:
        loader.dispose()
    return node, data


def _semantic_problems(sheet: RunSheet) -> list[tuple[tuple[int | str, ...], str]]:
    """Cross-field checks pydantic field validators cannot locate precisely."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    seen: set[str] = set()
    for i, seg in enumerate(sheet.segments):
        if seg.name in seen:
            problems.append((("segments", i, "name"), f"segment name {seg.name!r} is used twice"))
        seen.add(seg.name)
    pool_names = [p.name for p in sheet.prompt_pools]
    for i, name in enumerate(pool_names):
        if name in pool_names[:i]:
            problems.append((("prompt_pools", i, "name"), f"prompt pool name {name!r} is used twice"))
    for i, seg in enumerate(sheet.segments):
        for j, pool_name in enumerate(seg.prompt_pools):
            if pool_name not in pool_names:
                problems.append((("segments", i, "prompt_pools", j), f"no prompt pool named {pool_name!r}"))
    for i, pool in enumerate(sheet.prompt_pools):
        for j, prompt in enumerate(pool.prompts):
            if not prompt.keywords:
                problems.append((
                    ("prompt_pools", i, "prompts", j, "text"),
                    f"cannot tell what a response to {prompt.text!r} looks like; add `match: [...]`",
                ))
    return problems


def parse_run_sheet(text: str, *, file: str = "<script>") -> RunSheet:
    """Validate run-sheet YAML text; raises ScriptError naming file, line and field."""
    node, data = _compose(text, file)
    if not isinstance(data, dict):
        raise ScriptError(
            "a run-sheet is a mapping with show, segments, prompt_pools and coupons", file=file, line=1
        )
    try:
        sheet = RunSheet.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        e = errors[0]
        loc = tuple(e["loc"])
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] != "missing" and "input" in e and not isinstance(e["input"], (dict, list)):
                msg += f" (got {e['input']!r})"
            elif e["type"] == "string_type" and isinstance(e.get("input"), dict):
                msg += " (a ': ' inside a text makes YAML read a mapping: quote the text or use ：)"
        if len(errors) > 1:
            msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise ScriptError(msg, file=file, line=_line_of(node, loc), field=_dotted(loc)) from None
    problems = _semantic_problems(sheet)
    if problems:
        loc, msg = problems[0]
        if len(problems) > 1:
            msg += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
        raise ScriptError(msg, file=file, line=_line_of(node, loc), field=_dotted(loc))
    return sheet


def load_run_sheet_file(path: str | Path) -> RunSheet:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ScriptError("run-sheet file not found", file=str(p)) from None
    except UnicodeDecodeError:
        raise ScriptError("run-sheet is not UTF-8", file=str(p)) from None
    except OSError as e:
        raise ScriptError(f"cannot read run-sheet: {e.strerror}", file=str(p)) from None
    return parse_run_sheet(text, file=str(p))


def library_dir() -> Path:
    """The shipped `scripts_library/` (package data `livebot_scripts`)."""
    return Path(str(resources.files("livebot_scripts")))


def library_names() -> list[str]:
    """Names of the shipped run-sheets (file stems), sorted."""
    return sorted(p.stem for p in library_dir().iterdir() if p.suffix in SCRIPT_SUFFIXES)


def load_run_sheet(name_or_path: str | Path) -> LoadedSheet:
    """A run-sheet by library name (``apparel``) or by path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in SCRIPT_SUFFIXES or p.is_file():
        return LoadedSheet(p.stem, p, load_run_sheet_file(p))
    for suffix in SCRIPT_SUFFIXES:
        candidate = library_dir() / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return LoadedSheet(candidate.stem, candidate, load_run_sheet_file(candidate))
    raise ScriptError(
        f"no run-sheet named {str(name_or_path)!r}; shipped: {', '.join(library_names()) or 'none'}",
        file=str(name_or_path),
    )


@dataclass(frozen=True, slots=True)
class CheckResult:
    path: Path
    sheet: RunSheet | None
    error: ScriptError | None


def check_dir(path: str | Path) -> list[CheckResult]:
    """Validate every run-sheet in a directory (or one file); never raises ScriptError."""
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in SCRIPT_SUFFIXES and f.is_file())
    else:
        raise ScriptError("no such file or directory", file=str(p))
    out = []
    for f in files:
        try:
            out.append(CheckResult(f, load_run_sheet_file(f), None))
        except ScriptError as e:
            out.append(CheckResult(f, None, e))
    return out
