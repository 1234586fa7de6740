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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.errors import ScriptError
from nlp.compliance import ComplianceLexicon, default_compliance
from nlp.topics import TOPICS  # topics a segment can answer and a trigger can watch: the analyzer's own set

if TYPE_CHECKING:
    from bot.state import WindowStats

SCRIPT_SUFFIXES = (".yaml", ".yml")
MAX_CHARS = 1_000_000
"""Longest run-sheet text; the shipped ones are a few KB."""
MAX_NESTING = 32
"""Deepest nesting of mappings and lists (the shipped run-sheets use 5)."""
MAX_NODES = 50_000
"""Most values a run-sheet may expand to, aliases counted at every use (refuses alias bombs)."""
_BRACKETS = re.compile(r"[\[\]{}]")


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
    max_dwell_s: int | None = Field(None, ge=10, le=4 * 3600)
    """The host screen nudges to move on once the segment has run this long; None = no limit."""
    variants: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Platform → talking points replacing `talking_points` for that platform's viewers (douyin, taobao …)."""
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

    @field_validator("variants")
    @classmethod
    def _platform_keys(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for key, points in v.items():
            if not _PLATFORM_KEY.match(key):
                raise ValueError(f"platform {key!r} must be a lowercase source name such as douyin or taobao")
            if not points:
                raise ValueError(f"variant {key!r} has no talking points")
        return v

    def talking_points_for(self, platform: str) -> tuple[str, ...]:
        """The talking points for viewers of `platform` (its variant, else the default ones)."""
        return self.variants.get(platform.lower(), self.talking_points)


_PLATFORM_KEY = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
KNOWN_PLATFORMS: tuple[str, ...] = (
    "bilibili", "douyin", "kuaishou", "taobao", "tiktok", "channels", "xiaohongshu", "jd", "pinduoduo",
    "custom",
)
"""Platform names sources put in `Event.platform` (generic JSON lets a pusher name others: a warning)."""

_QUOTED = re.compile(r"[「“\"『]([^」”\"』]{1,12})[」”\"』]")
_TYPE_IN = re.compile(r"(?:扣|打|刷)\s*([0-9A-Za-z]{1,6})")


def default_match(text: str) -> tuple[str, ...]:
    """Response keywords implied by a prompt's text: 「想要」 → 想要, 扣1 → 1, 打666 → 666."""
    quoted = _QUOTED.findall(text)
    if quoted:
        return tuple(dict.fromkeys(quoted))
    return tuple(dict.fromkeys(_TYPE_IN.findall(text)))


class VoteOption(_Model):
    label: str = Field(min_length=1, max_length=20)
    """What the screen shows for this option, e.g. 扣1 燕麦色."""
    match: tuple[str, ...] = ()
    """Comments containing one of these count for this option; empty = derived from the label (扣1 → 1)."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"label": v} if isinstance(v, str) else v

    @field_validator("match", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return (v,) if isinstance(v, (str, int)) else v

    @property
    def keywords(self) -> tuple[str, ...]:
        return tuple(str(k) for k in self.match) or default_match(self.label)


class Prompt(_Model):
    text: str = Field(min_length=1, max_length=60)
    """What the host says, e.g. 想要的姐妹扣1."""
    match: tuple[str, ...] = ()
    """Comments containing one of these count as responses; empty = derived from the text (「…」, 扣X)."""
    options: tuple[VoteOption, ...] = ()
    """A vote: two or more options (扣1 / 扣2 …) counted separately; the screen shows the live count."""
    window_s: int | None = Field(None, ge=5, le=600)
    """How long responses (and votes) are counted after the prompt; None = `[advisors.prompts] response_s`."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"text": v} if isinstance(v, str) else v

    @field_validator("options")
    @classmethod
    def _two_or_more(cls, v: tuple[VoteOption, ...]) -> tuple[VoteOption, ...]:
        if len(v) == 1:
            raise ValueError("a vote needs at least two options")
        return v

    @property
    def keywords(self) -> tuple[str, ...]:
        if self.match:
            return self.match
        if self.options:
            return tuple(dict.fromkeys(k for o in self.options for k in o.keywords))
        return default_match(self.text)


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
    planned_minutes: int = Field(90, ge=1, le=24 * 60)
    """Planned length; the host screen warns as the show approaches it (retention is best around 90 min)."""
    description: str = ""


class ChecklistItem(_Model):
    name: str = Field(min_length=1, max_length=20)
    """What the opening must have covered, e.g. 人设, 场景, 核心卖点."""
    hint: str = Field("", max_length=80)
    """A reminder of how, shown next to the item."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class Opening(_Model):
    """The opening: a deadline and a checklist field control ticks off."""

    segment: str | None = None
    """The opening segment; None = the first segment."""
    deadline_s: int | None = Field(None, ge=30, le=1800)
    """Move on from the opening within this many seconds; None = `[advisors.timing] opening_deadline_s`."""
    checklist: tuple[ChecklistItem, ...] = ()
    """Items to cover before the deadline (人设 / 场景 / 核心卖点)."""


class Offer(_Model):
    """One offer on sale during the show, for the offer checks (discount depth, concurrency)."""

    name: str = Field(min_length=1, max_length=40)
    list_price: float | None = Field(None, gt=0, le=10_000_000)
    """Reference price (吊牌价) of a price offer."""
    price: float | None = Field(None, gt=0, le=10_000_000)
    """Price in the room (到手价) of a price offer."""
    threshold: float | None = Field(None, gt=0, le=10_000_000)
    """满 X of a 满X减Y offer."""
    amount_off: float | None = Field(None, gt=0, le=10_000_000)
    """减 Y of a 满X减Y offer (not `off`: YAML reads that key as false)."""
    discount: float | None = Field(None, gt=0, lt=1)
    """Share taken off (0.2 = 8折)."""
    segments: tuple[str, ...] = ()
    """Segments during which the offer runs; empty = the whole show."""

    @model_validator(mode="after")
    def _one_form(self) -> Offer:
        forms = [
            self.list_price is not None or self.price is not None,
            self.threshold is not None or self.amount_off is not None,
            self.discount is not None,
        ]
        if sum(forms) != 1:
            raise ValueError("an offer is one of: list_price + price, threshold + amount_off, or discount")
        if forms[0] and (self.list_price is None or self.price is None):
            raise ValueError("a price offer needs both list_price and price")
        if forms[1] and (self.threshold is None or self.amount_off is None):
            raise ValueError("a 满减 offer needs both threshold and amount_off")
        if self.price is not None and self.list_price is not None and self.price > self.list_price:
            raise ValueError(f"price {self.price:g} is above list_price {self.list_price:g}")
        if self.amount_off is not None and self.threshold is not None and self.amount_off >= self.threshold:
            raise ValueError(f"amount_off {self.amount_off:g} is not below threshold {self.threshold:g}")
        return self

    @property
    def depth(self) -> float:
        """The share taken off the reference price (0..1)."""
        if self.discount is not None:
            return self.discount
        if self.price is not None and self.list_price is not None:
            return 1.0 - self.price / self.list_price
        return (self.amount_off or 0.0) / (self.threshold or 1.0)


class AnswerCard(_Model):
    """A short canned answer offered to field control when questions about its topic pile up."""

    topic: str
    """The analyzer topic it answers (size_fit, shipping, after_sales, coupon …)."""
    title: str = Field(min_length=1, max_length=30)
    """Shown above the answer, e.g. 尺码怎么选."""
    answer: str = Field(min_length=1, max_length=200)
    """What field control pastes into the chat or the host reads out."""

    @field_validator("topic")
    @classmethod
    def _known_topic(cls, v: str) -> str:
        if v not in TOPICS:
            raise ValueError(f"unknown topic {v!r}; one of: {', '.join(TOPICS)}")
        return v


class RunSheet(_Model):
    """One show: segments in running order, prompt pools, the coupon plan, offers and answer cards."""

    show: ShowMeta
    segments: tuple[Segment, ...] = Field(min_length=1)
    prompt_pools: tuple[PromptPool, ...] = ()
    coupons: CouponPlan = CouponPlan()
    opening: Opening = Opening()
    offers: tuple[Offer, ...] = ()
    answer_cards: tuple[AnswerCard, ...] = ()

    @property
    def opening_segment(self) -> Segment:
        return self.segment(self.opening.segment or "") or self.segments[0]

    def answer_card(self, topic: str) -> AnswerCard | None:
        return next((c for c in self.answer_cards if c.topic == topic), None)

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
    warnings: tuple[ScriptWarning, ...] = ()
    """Offer, compliance and platform warnings (the sheet is valid; these deserve a second look)."""


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


def _check_nodes(root: yaml.Node, file: str) -> None:
    """Refuse duplicate keys, recursive aliases, deep nesting and alias bombs (iteratively: no recursion).

    PyYAML silently keeps the last of two equal keys; in a run-sheet that hides a typo, so refuse.
    Aliases are counted at every use, so a few lines of anchors cannot expand into millions of values.
    """
    expanded = 0
    checked: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[int | str, ...], frozenset[int]]] = [(root, (), frozenset())]
    while stack:
        node, path, ancestors = stack.pop()
        line = node.start_mark.line + 1
        expanded += 1
        if expanded > MAX_NODES:
            raise ScriptError(f"the run-sheet expands to more than {MAX_NODES} values (an alias used too often?)",
                              file=file, line=line, field=_dotted(path))
        if len(path) > MAX_NESTING:
            raise ScriptError(f"nested deeper than {MAX_NESTING} levels", file=file, line=line, field=_dotted(path))
        if id(node) in ancestors:
            raise ScriptError("an alias refers to a value that contains it", file=file, line=line,
                              field=_dotted(path))
        children: list[tuple[yaml.Node, tuple[int | str, ...]]] = []
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen and id(node) not in checked:
                        raise ScriptError("duplicate key", file=file, line=key.start_mark.line + 1,
                                          field=_dotted((*path, key.value)))
                    seen.add(key.value)
                    children.append((value, (*path, key.value)))
                else:
                    children += [(key, (*path, "<key>")), (value, (*path, "<key>"))]
            checked.add(id(node))
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, (*path, i)) for i, item in enumerate(node.value)]
        if children:
            inner = ancestors | {id(node)}
            stack.extend((child, child_path, inner) for child, child_path in reversed(children))


def _flow_depth(text: str) -> int:
    """Deepest [ { nesting, counted roughly (quotes ignored): PyYAML's scanner slows down with depth."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(text):
        depth = depth + 1 if m.group() in "[{" else max(0, depth - 1)
        deepest = max(deepest, depth)
    return deepest


def _compose(text: str, file: str) -> tuple[yaml.Node, Any]:
    if len(text) > MAX_CHARS:
        raise ScriptError(f"the run-sheet is longer than {MAX_CHARS} characters", file=file)
    if _flow_depth(text) > 2 * MAX_NESTING:
        raise ScriptError(f"nested deeper than {MAX_NESTING} levels", file=file)
    try:
        # The reader checks every character up front: a control character is a ReaderError here.
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as e:
        what = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        raise ScriptError(f"invalid YAML: character {what} is not allowed", file=file,
                          line=text.count("\n", 0, e.position) + 1) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise ScriptError("the run-sheet is empty", file=file, line=1)
        _check_nodes(node, file)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ScriptError(f"invalid YAML: {e.problem or e.context}", file=file, line=line) from None
    except yaml.YAMLError as e:
        raise ScriptError(f"invalid YAML: {e}", file=file) from None
    except RecursionError:
        raise ScriptError(f"nested deeper than {MAX_NESTING} levels", file=file) from None
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
            claimed: dict[str, str] = {}
            for k, option in enumerate(prompt.options):
                loc: tuple[int | str, ...] = ("prompt_pools", i, "prompts", j, "options", k)
                if not option.keywords:
                    problems.append((loc, f"cannot tell what a vote for {option.label!r} looks like; "
                                          "add `match: [...]`"))
                for key in option.keywords:
                    other = claimed.setdefault(key.lower(), option.label)
                    if other != option.label:
                        problems.append((loc, f"{key!r} would count for both {other!r} and {option.label!r}"))
    for i, seg in enumerate(sheet.segments):
        if seg.max_dwell_s is not None and seg.max_dwell_s < seg.min_dwell_s:
            problems.append((("segments", i, "max_dwell_s"),
                             f"max_dwell_s {seg.max_dwell_s} is below min_dwell_s {seg.min_dwell_s}"))
    if sheet.opening.segment is not None and sheet.segment(sheet.opening.segment) is None:
        problems.append((("opening", "segment"), f"no segment named {sheet.opening.segment!r}"))
    items = [c.name for c in sheet.opening.checklist]
    for i, name in enumerate(items):
        if name in items[:i]:
            problems.append((("opening", "checklist", i), f"checklist item {name!r} is listed twice"))
    card_topics = [c.topic for c in sheet.answer_cards]
    for i, topic in enumerate(card_topics):
        if topic in card_topics[:i]:
            problems.append((("answer_cards", i, "topic"), f"topic {topic!r} already has an answer card"))
    for i, offer in enumerate(sheet.offers):
        for j, seg_name in enumerate(offer.segments):
            if sheet.segment(seg_name) is None:
                problems.append((("offers", i, "segments", j), f"no segment named {seg_name!r}"))
    return problems


def parse_run_sheet(text: str, *, file: str = "<script>") -> RunSheet:
    """Validate run-sheet YAML text; raises ScriptError naming file, line and field."""
    return _parse(text, file)[0]


def _parse(text: str, file: str) -> tuple[RunSheet, yaml.Node]:
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
            if isinstance(e.get("input"), bool) and e["type"] in ("string_type", "invalid_key"):
                msg += "; YAML reads on/off/yes/no as true/false: quote such a key or value"
        if len(errors) > 1:
            msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise ScriptError(msg, file=file, line=_line_of(node, loc), field=_dotted(loc)) from None
    problems = _semantic_problems(sheet)
    if problems:
        loc, msg = problems[0]
        if len(problems) > 1:
            msg += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
        raise ScriptError(msg, file=file, line=_line_of(node, loc), field=_dotted(loc))
    return sheet, node


def _read(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ScriptError("run-sheet file not found", file=str(p)) from None
    except UnicodeDecodeError:
        raise ScriptError("run-sheet is not UTF-8", file=str(p)) from None
    except OSError as e:
        raise ScriptError(f"cannot read run-sheet: {e.strerror}", file=str(p)) from None


def load_run_sheet_file(path: str | Path) -> RunSheet:
    p = Path(path)
    return parse_run_sheet(_read(p), file=str(p))


def check_run_sheet(
    text: str, *, file: str = "<script>", limits: CheckLimits | None = None
) -> tuple[RunSheet, list[ScriptWarning]]:
    """Validate run-sheet text (ScriptError if invalid) and lint it: offer and compliance warnings."""
    sheet, node = _parse(text, file)
    return sheet, lint_run_sheet(sheet, node, file=file, limits=limits)


def check_run_sheet_file(
    path: str | Path, *, limits: CheckLimits | None = None
) -> tuple[RunSheet, list[ScriptWarning]]:
    p = Path(path)
    return check_run_sheet(_read(p), file=str(p), limits=limits)


# -- warnings: offers, timing and compliance ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScriptWarning:
    """Something in a valid run-sheet that deserves a second look; never stops a show."""

    file: str
    line: int
    field: str
    message: str
    term: str | None = None
    """The compliance term found, for compliance warnings."""
    rule: str = ""
    """discount_depth, concurrent_offers, coupon_budget, coupon_per_hour, compliance, platform."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class CheckLimits:
    """Thresholds of the run-sheet checks (`[advisors.checks]`) and the coupon defaults a sheet inherits."""

    max_discount: float = 0.30
    """Offers taking off more than this share are flagged (deep discounts lowered order value: seed cases)."""
    max_concurrent_offers: int = 3
    """More offers than this running in one segment are flagged (viewers stop following them)."""
    coupon_cadence_s: int = 300
    coupon_budget: int = 10
    coupon_per_hour: int = 8
    compliance: ComplianceLexicon | None = None
    """The lexicon for compliance warnings; None = the shipped `nlp/lexicons/compliance.yaml`."""


def _texts(sheet: RunSheet) -> Iterator[tuple[tuple[int | str, ...], str]]:
    """Everything in a run-sheet the host may say or show, with its location."""
    yield ("show", "name"), sheet.show.name
    if sheet.show.description:
        yield ("show", "description"), sheet.show.description
    for i, seg in enumerate(sheet.segments):
        for j, point in enumerate(seg.talking_points):
            yield ("segments", i, "talking_points", j), point
        for platform, points in seg.variants.items():
            for j, point in enumerate(points):
                yield ("segments", i, "variants", platform, j), point
    for i, pool in enumerate(sheet.prompt_pools):
        for j, prompt in enumerate(pool.prompts):
            yield ("prompt_pools", i, "prompts", j), prompt.text
    for i, item in enumerate(sheet.opening.checklist):
        if item.hint:
            yield ("opening", "checklist", i, "hint"), item.hint
    for i, offer in enumerate(sheet.offers):
        yield ("offers", i, "name"), offer.name
    for i, item_name in enumerate(sheet.coupons.items):
        yield ("coupons", "items", i), item_name
    for i, card in enumerate(sheet.answer_cards):
        yield ("answer_cards", i, "title"), card.title
        yield ("answer_cards", i, "answer"), card.answer


def lint_run_sheet(
    sheet: RunSheet, node: yaml.Node, *, file: str = "<script>", limits: CheckLimits | None = None
) -> list[ScriptWarning]:
    """Offer checks (discount depth, concurrent offers, coupon budget vs cadence), compliance terms and
    unknown platforms, as warnings naming file, line and field, in line order."""
    lim = limits or CheckLimits()
    out: list[ScriptWarning] = []

    def warn(loc: tuple[int | str, ...], message: str, rule: str, term: str | None = None) -> None:
        out.append(ScriptWarning(file, _line_of(node, loc), _dotted(loc), message, term, rule))

    for i, offer in enumerate(sheet.offers):
        if offer.depth > lim.max_discount + 1e-9:
            warn(("offers", i), f"offer {offer.name!r} takes {offer.depth:.0%} off, deeper than "
                               f"{lim.max_discount:.0%} (deep discounts lower the average order value)",
                 "discount_depth")
    if sheet.offers:
        for seg in sheet.segments:
            running = [o.name for o in sheet.offers if not o.segments or seg.name in o.segments]
            if len(running) > lim.max_concurrent_offers:
                warn(("offers",), f"{len(running)} offers run at once in segment {seg.name!r} "
                                  f"({', '.join(running)}); keep it to {lim.max_concurrent_offers}",
                     "concurrent_offers")
    plan = sheet.coupons
    cadence = plan.cadence_s or lim.coupon_cadence_s
    budget = plan.budget if plan.budget is not None else lim.coupon_budget
    per_hour = plan.per_hour if plan.per_hour is not None else lim.coupon_per_hour
    planned_s = sheet.show.planned_minutes * 60
    wanted = planned_s // cadence
    if budget < wanted:
        where = ("coupons", "budget") if plan.budget is not None else ("coupons",)
        warn(where, f"budget {budget} drops runs out after {budget * cadence // 60} min at one every "
                    f"{cadence} s; the show is planned for {sheet.show.planned_minutes} min "
                    f"({wanted} drops)", "coupon_budget")
    # The config's own defaults are not this run-sheet's business: judge the cap once the sheet sets either.
    if (plan.cadence_s is not None or plan.per_hour is not None) and 0 < per_hour < 3600 // cadence:
        where = ("coupons", "per_hour") if plan.per_hour is not None else ("coupons",)
        warn(where, f"per_hour {per_hour} is below the cadence's {3600 // cadence} drops an hour "
                    f"(one every {cadence} s)", "coupon_per_hour")
    if plan.cooldown_s is not None and plan.cooldown_s > cadence:
        warn(("coupons", "cooldown_s"), f"cooldown_s {plan.cooldown_s} is longer than cadence_s {cadence}",
             "coupon_cooldown")
    for i, seg in enumerate(sheet.segments):
        for platform in seg.variants:
            if platform not in KNOWN_PLATFORMS:
                warn(("segments", i, "variants", platform),
                     f"platform {platform!r} is not one livebot's sources report "
                     f"({', '.join(KNOWN_PLATFORMS)}); this variant shows only for events that name it",
                     "platform")
    lexicon = lim.compliance or default_compliance()
    for loc, text in _texts(sheet):
        for hit in lexicon.find(text):
            warn(loc, f"{hit.label}「{hit.term}」 (advertising law): rephrase or back it with evidence",
                 "compliance", hit.term)
    out.sort(key=lambda w: (w.line, w.field))
    return out


def library_dir() -> Path:
    """The shipped `scripts_library/` (package data `livebot_scripts`)."""
    return Path(str(resources.files("livebot_scripts")))


def library_names() -> list[str]:
    """Names of the shipped run-sheets (file stems), sorted."""
    return sorted(p.stem for p in library_dir().iterdir() if p.suffix in SCRIPT_SUFFIXES)


def load_run_sheet(name_or_path: str | Path, *, limits: CheckLimits | None = None) -> LoadedSheet:
    """A run-sheet by library name (``apparel``) or by path to a YAML file, with its warnings."""
    p = Path(name_or_path)
    if not (p.suffix in SCRIPT_SUFFIXES or p.is_file()):
        p = next(
            (c for c in (library_dir() / f"{name_or_path}{x}" for x in SCRIPT_SUFFIXES) if c.is_file()), p
        )
    if p.suffix in SCRIPT_SUFFIXES or p.is_file():
        sheet, warnings = check_run_sheet_file(p, limits=limits)
        return LoadedSheet(p.stem, p, sheet, tuple(warnings))
    raise ScriptError(
        f"no run-sheet named {str(name_or_path)!r}; shipped: {', '.join(library_names()) or 'none'}",
        file=str(name_or_path),
    )


@dataclass(frozen=True, slots=True)
class CheckResult:
    path: Path
    sheet: RunSheet | None
    error: ScriptError | None
    warnings: tuple[ScriptWarning, ...] = ()


def check_dir(path: str | Path, *, limits: CheckLimits | None = None) -> list[CheckResult]:
    """Validate and lint every run-sheet in a directory (or one file); never raises ScriptError."""
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
            sheet, warnings = check_run_sheet_file(f, limits=limits)
            out.append(CheckResult(f, sheet, None, tuple(warnings)))
        except ScriptError as e:
            out.append(CheckResult(f, None, e))
    return out
