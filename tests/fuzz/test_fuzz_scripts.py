"""Fuzzing the run-sheet YAML loader: any text gives a RunSheet or a ScriptError, never another
exception, a hang or unbounded memory (recursive aliases, alias bombs, deep nesting included).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import ScriptError
from bot.scripts import MAX_NESTING, RunSheet, check_run_sheet, library_dir, parse_run_sheet
from tests.fuzz.bounds import bounded

SHIPPED = {p.stem: p.read_text(encoding="utf-8") for p in sorted(library_dir().glob("*.yaml"))}


def _keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return {str(k) for k in obj} | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


_VOCAB = sorted({k for text in SHIPPED.values() for k in _keys(yaml.safe_load(text))})
_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=20) | st.sampled_from(["size_fit", "price", ">=", "topic_confusion_rate", "开场", "扣1"])
)
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(_VOCAB) | st.text(max_size=6), children, max_size=5),
    max_leaves=25,
)


def _accepts_or_script_error(text: str) -> None:
    try:
        sheet, warnings = check_run_sheet(text, file="fuzz.yaml")
    except ScriptError as e:
        assert e.file == "fuzz.yaml"
        assert str(e)  # reads as a sentence with file (and line/field when known)
        return
    assert isinstance(sheet, RunSheet)
    assert isinstance(warnings, list)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_TREES)
def test_random_yaml_documents(tree: Any) -> None:
    _accepts_or_script_error(yaml.safe_dump(tree, allow_unicode=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(SHIPPED)),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["delete", "duplicate", "replace", "insert", "indent"]),
            st.integers(0, 10_000),
            st.text(alphabet=" \t:-[]{}&*!|>'\"#,?%@`0123456789abc码券", max_size=12),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_shipped_run_sheets(name: str, edits: list[tuple[str, int, str]]) -> None:
    lines = SHIPPED[name].splitlines()
    for op, pos, junk in edits:
        i = pos % len(lines)
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "replace":
            lines[i] = junk
        elif op == "insert":
            line = lines[i]
            cut = pos % (len(line) + 1)
            lines[i] = line[:cut] + junk + line[cut:]
        else:
            lines[i] = "  " + lines[i]
        if not lines:
            lines = [""]
    _accepts_or_script_error("\n".join(lines))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_random_text(text: str) -> None:
    _accepts_or_script_error(text)


def _bomb(kind: str, levels: int = 8, fan: int = 9) -> str:
    lines = ["a0: &a0 " + ("[" + ", ".join(["1"] * fan) + "]" if kind == "list" else "{x: 1}")]
    for i in range(1, levels):
        refs = [f"*a{i - 1}"] * fan
        body = "[" + ", ".join(refs) + "]" if kind == "list" else "{" + ", ".join(f"k{j}: {r}" for j, r in
                                                                               enumerate(refs)) + "}"
        lines.append(f"a{i}: &a{i} {body}")
    return "\n".join(lines) + f"\nshow: *a{levels - 1}\n"


ADVERSARIAL = {
    "recursive list alias": "show: &s [*s]\n",
    "recursive map alias": "show: &s {name: x, more: *s}\n",
    "alias bomb, lists": _bomb("list"),
    "alias bomb, maps": _bomb("map"),
    "alias bomb through merge keys": "base: &b {x: 1}\n" + "".join(
        f"m{i}: &m{i} {{<<: [{', '.join(['*b'] + [f'*m{j}' for j in range(max(0, i - 3), i)])}], y{i}: 1}}\n"
        for i in range(200)
    ),
    "deep flow nesting": "show: " + "[" * 100_000 + "]" * 100_000,
    "deep block sequences": "show:\n" + "- " * 5_000 + "x\n",
    "deep block mappings": "".join(" " * i + f"k{i}:\n" for i in range(MAX_NESTING + 10)) + " " * 50 + "v\n",
    "huge text": "show: " + "长" * 2_000_000,
    "many documents": "---\nshow: {}\n" * 1_000,
    "duplicate key behind an alias": "x: &x {a: 1, a: 2}\nshow: *x\n",
    "complex keys": "? [a, b]\n: c\nshow:\n  ? {k: v}\n  : 1\n",
    "binary junk": bytes(range(256)).decode("latin-1") * 50,
    "tabs": "show:\n\tname: x\n",
}


@pytest.mark.parametrize("text", list(ADVERSARIAL.values()), ids=list(ADVERSARIAL))
def test_adversarial_run_sheets_fail_cleanly_and_boundedly(text: str) -> None:
    def parse() -> None:
        with pytest.raises(ScriptError):
            parse_run_sheet(text, file="evil.yaml")

    bounded(parse, seconds=60, mb=200)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("show: &s [*s]\n", r"evil.yaml:1: show\[0\]: an alias refers to a value that contains it"),
        (_bomb("list"), "expands to more than"),
        ("show: " + "[" * 1000 + "]" * 1000, "nested deeper than"),
        ("show:\n" + "- " * 1000 + "x\n", "nested deeper than"),
        ("show:\n  name: a\x00b\n", r"evil.yaml:2: invalid YAML: character #x0000 is not allowed"),
        ("show: " + "x" * 1_000_001, "longer than 1000000 characters"),
    ],
    ids=["recursive alias", "alias bomb", "deep flow", "deep block", "control character", "too long"],
)
def test_refusals_say_what_is_wrong(text: str, match: str) -> None:
    with pytest.raises(ScriptError, match=match):
        parse_run_sheet(text, file="evil.yaml")
