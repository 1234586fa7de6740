"""Build the authored live-commerce training set from `livecommerce_templates.yaml`.

Deterministic: the same templates and seed always give the same TSV. Each group fills its templates'
``{slot}`` fields, decorates the result the way viewers type (host address, particles, question marks,
repeats) and keeps drawing until it has ``count`` distinct lines. A text produced by two groups with
different labels is dropped from both, so the file never contradicts itself.

Usage::

    python -m nlp.data.make_livecommerce [--out nlp/data/livecommerce_train.tsv] [--seed 12]
        [--exclude ../shared/data/eval/livechat_dev.tsv ...]

``--exclude`` drops any line whose loose form (case, spaces, punctuation and emoji removed) equals a text
in the given TSV/TXT files; it keeps the authored set disjoint from evaluation data.
"""

from __future__ import annotations

import argparse
import random
import re
import string
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "livecommerce_templates.yaml"
DEFAULT_OUT = HERE / "livecommerce_train.tsv"
DEFAULT_SEED = 12

_SLOT = re.compile(r"\{(\w+)\}")
_FINAL_PARTICLES = set("吗呢啊呀吧嘛哈么嘞哦?？。!！~～")
_LOOSE_DROP = re.compile(
    "[\\s" + re.escape(string.punctuation) + "，。！？、；：“”‘’（）《》【】…～·"
    "\U0001f000-\U0001faff\u2600-\u27bf\ufe0f\u200d]+"
)
_EMOTE_CODE = re.compile(r"\[[^\[\]]{1,8}\]")

# Decoration tables per style: (weight, value). The host address "{host}" is filled like a slot.
_QUESTION_PREFIX = [
    (60, ""),
    (10, "{host}"),
    (8, "{host}，"),
    (4, "{host} "),
    (4, "请问"),
    (3, "问一下"),
    (3, "@主播 "),
    (2, "刚来，"),
    (2, "{fans}"),
    (2, "想问下"),
    (2, "那个"),
]
_QUESTION_PARTICLE = [(70, ""), (10, "啊"), (6, "呀"), (6, "呢"), (3, "哈"), (3, "嘞"), (2, "哦")]
_QUESTION_MARK = [(38, ""), (30, "？"), (14, "?"), (8, "？？"), (4, "？？？"), (3, "。"), (3, " ")]
_STATEMENT_PREFIX = [(84, ""), (12, "{host}，"), (4, "{host}")]
_STATEMENT_END = [(60, ""), (11, "。"), (11, "！"), (6, "啊"), (5, "～"), (4, "哈"), (3, "!!")]
_EXCLAIM_PREFIX = [(72, ""), (10, "{host}"), (6, "{host}，"), (4, "哇"), (4, "天呐"), (4, "真的")]
_EXCLAIM_END = [(44, ""), (16, "！"), (8, "！！"), (6, "!!!"), (8, "啊"), (6, "呀"), (6, "～"), (6, "哈哈")]
_STYLE_PREFIX = {"question": _QUESTION_PREFIX, "statement": _STATEMENT_PREFIX, "exclaim": _EXCLAIM_PREFIX}
# Statement prefixes only make sense before complaints and plain statements, not before one-word replies.
_STATEMENT_PREFIX_MIN_LEN = 3
_GROUP_PREFIX_RATE = 0.35


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    sentiment: str
    confusion: int
    style: str
    count: int
    templates: tuple[str, ...]
    prefixes: tuple[str, ...] | None = None
    """Overrides the style's prefix table: empty means never prefix, else 35% one of these."""


def _pick(rng: random.Random, table: Sequence[tuple[int, str]]) -> str:
    total = sum(w for w, _ in table)
    r = rng.randrange(total)
    for w, value in table:
        r -= w
        if r < 0:
            return value
    raise AssertionError("unreachable")


def _fill(template: str, slots: dict[str, list[str]], rng: random.Random) -> str:
    def _one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in slots:
            raise KeyError(f"template {template!r} uses unknown slot {{{name}}}")
        return str(rng.choice(slots[name]))

    return _SLOT.sub(_one, template)


def _decorate(text: str, group: Group, slots: dict[str, list[str]], rng: random.Random) -> str:
    style = group.style
    if style == "raw":
        return text
    if style not in _STYLE_PREFIX:
        raise ValueError(f"group {group.name}: unknown style {style!r}")
    if group.prefixes is not None:
        use = group.prefixes and rng.random() < _GROUP_PREFIX_RATE
        prefix = rng.choice(group.prefixes) if use else ""
    else:
        prefix = _pick(rng, _STYLE_PREFIX[style])
    # Never stack two forms of address ("宝主播多高").
    if prefix and (any(text.startswith(h) for h in slots["host"]) or text.startswith(prefix[:1])):
        prefix = ""
    if style == "question":
        body = text
        if body[-1] not in _FINAL_PARTICLES:
            body += _pick(rng, _QUESTION_PARTICLE)
        if body[-1] not in "?？":
            body += _pick(rng, _QUESTION_MARK)
        return _fill(prefix, slots, rng) + body.rstrip()
    if style == "statement":
        if len(text) < _STATEMENT_PREFIX_MIN_LEN:
            prefix = ""
        end = _pick(rng, _STATEMENT_END)
        if text[-1] in _FINAL_PARTICLES:
            end = ""
        return _fill(prefix, slots, rng) + text + end
    if len(text) <= 3 and rng.random() < 0.15:
        text = text * rng.choice((2, 3))
    end = _pick(rng, _EXCLAIM_END)
    if text[-1] in _FINAL_PARTICLES and end in ("啊", "呀"):
        end = ""
    return _fill(prefix, slots, rng) + text + end


def load_templates(path: Path = TEMPLATES) -> tuple[dict[str, list[str]], list[Group]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    slots = {k: [str(v) for v in vs] for k, vs in data["slots"].items()}
    groups = [
        Group(
            name=g["name"],
            sentiment=g["sentiment"],
            confusion=int(g["confusion"]),
            style=g["style"],
            count=int(g["count"]),
            templates=tuple(str(t) for t in g["templates"]),
            prefixes=tuple(str(p) for p in g["prefixes"]) if "prefixes" in g else None,
        )
        for g in data["groups"]
    ]
    for g in groups:
        if g.sentiment not in ("neg", "neu", "pos") or g.confusion not in (0, 1):
            raise ValueError(f"group {g.name}: bad labels {g.sentiment}/{g.confusion}")
    return slots, groups


def loose_key(text: str) -> str:
    """The comparison form used for --exclude: lower-case, no spaces, punctuation, emote codes or emoji."""
    return _LOOSE_DROP.sub("", _EMOTE_CODE.sub("", text.lower()))


def _read_texts(paths: Iterable[Path]) -> set[str]:
    keys: set[str] = set()
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        if path.suffix == ".tsv":
            lines = [line.split("\t", 1)[0] for line in lines[1:]]
        keys.update(k for k in map(loose_key, lines) if k)
    return keys


def generate(seed: int = DEFAULT_SEED, exclude: set[str] | None = None) -> list[tuple[str, str, int, str]]:
    """Rows ``(text, sentiment, confusion, group)`` in a deterministic order."""
    slots, groups = load_templates()
    rng = random.Random(seed)
    exclude = exclude or set()
    labels: dict[str, tuple[str, int]] = {}
    conflicts: set[str] = set()
    rows: list[tuple[str, str, int, str]] = []
    for group in groups:
        made: set[str] = set()
        attempts = 0
        # Every template is used at least once before random draws, so rare templates are not lost.
        queue = list(group.templates)
        while len(made) < group.count and attempts < group.count * 60:
            attempts += 1
            template = queue.pop(0) if queue else rng.choice(group.templates)
            text = _decorate(_fill(template, slots, rng), group, slots, rng).strip()
            if not text or text in made or loose_key(text) in exclude:
                continue
            seen = labels.get(text)
            if seen is not None and seen != (group.sentiment, group.confusion):
                conflicts.add(text)
                continue
            labels[text] = (group.sentiment, group.confusion)
            made.add(text)
            rows.append((text, group.sentiment, group.confusion, group.name))
    rows = [r for r in rows if r[0] not in conflicts]
    # Drop cross-group exact duplicates (same labels), keeping the first.
    unique: dict[str, tuple[str, str, int, str]] = {}
    for row in rows:
        unique.setdefault(row[0], row)
    out = list(unique.values())
    rng.shuffle(out)
    return out


def write_tsv(rows: Sequence[tuple[str, str, int, str]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.write("text\tsentiment\tconfusion\n")
        for text, sentiment, confusion, _ in rows:
            f.write(f"{text}\t{sentiment}\t{confusion}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--exclude", type=Path, nargs="*", default=[])
    args = parser.parse_args(argv)
    exclude = _read_texts(args.exclude)
    rows = generate(args.seed, exclude)
    write_tsv(rows, args.out)
    counts: dict[tuple[str, int], int] = {}
    for _, s, c, _ in rows:
        counts[(s, c)] = counts.get((s, c), 0) + 1
    summary = ", ".join(f"{s}/{c}: {n}" for (s, c), n in sorted(counts.items()))
    print(f"wrote {len(rows)} rows to {args.out} ({summary})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
