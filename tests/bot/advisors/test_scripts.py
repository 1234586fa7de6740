from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.cli import main
from bot.errors import ScriptError
from bot.scripts import (
    Metric,
    check_dir,
    default_match,
    library_dir,
    library_names,
    load_run_sheet,
    load_run_sheet_file,
    parse_run_sheet,
)
from bot.state import RoomState

GOOD = """\
show:
  name: 测试专场
  category: 服饰
segments:
  - name: 开场
    min_dwell_s: 30
  - name: 尺码答疑
    answers_topics: [size_fit]
    triggers:
      - metric: topic_confusion_rate
        topic: size_fit
        window_s: 60
        op: ">="
        value: 0.15
        min_comments: 10
prompt_pools:
  - name: 互动
    prompts:
      - 想要的扣1
coupons:
  cadence_s: 240
"""


def test_shipped_run_sheets_are_valid_and_cover_three_categories() -> None:
    assert library_names() == ["apparel", "beauty", "food"]
    categories = set()
    for name in library_names():
        loaded = load_run_sheet(name)
        sheet = loaded.sheet
        categories.add(sheet.show.category)
        names = [s.name for s in sheet.segments]
        assert names[0] == "开场" and names[-1] == "收尾"
        assert any(s.promotional for s in sheet.segments)
        assert any(p.idle for p in sheet.prompt_pools) and any(not p.idle for p in sheet.prompt_pools)
        assert all(p.keywords for pool in sheet.prompt_pools for p in pool.prompts)
        assert sheet.coupons.milestones and sheet.coupons.milestones[0].item == "盲盒"
    assert categories == {"服饰", "美妆", "食品"}
    apparel = load_run_sheet("apparel").sheet
    size = apparel.segment("尺码答疑")
    assert size is not None and size.answers_topics == ("size_fit",)
    assert size.triggers[0].metric is Metric.TOPIC_CONFUSION_RATE and size.triggers[0].value == 0.15


def test_load_by_path_and_unknown_name(tmp_path: Path) -> None:
    p = tmp_path / "show.yaml"
    p.write_text(GOOD, encoding="utf-8")
    loaded = load_run_sheet(str(p))
    assert loaded.name == "show" and loaded.sheet.coupons.cadence_s == 240
    with pytest.raises(ScriptError, match="no run-sheet named 'nope'; shipped: apparel, beauty, food"):
        load_run_sheet("nope")


def test_prompt_response_keywords_are_derived_from_the_text() -> None:
    assert default_match("想要的姐妹扣1") == ("1",)
    assert default_match("觉得好看的打「好看」") == ("好看",)
    assert default_match("打666走一波") == ("666",)
    assert default_match("点个关注吧") == ()


def _error(tmp_path: Path, text: str) -> ScriptError:
    p = tmp_path / "bad.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ScriptError) as info:
        load_run_sheet_file(p)
    assert info.value.file == str(p)
    assert str(info.value).startswith(f"{p}:")
    return info.value


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD.replace("    min_dwell_s: 30\n", "    min_dwell_s: [30\n"))
    assert err.line is not None and err.line >= 7
    assert "invalid YAML" in str(err)


def test_wrong_type_names_line_and_field(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD.replace("value: 0.15", "value: 15%"))
    assert err.field == "segments[1].triggers[0].value"
    assert err.line == 14
    assert "(got '15%')" in str(err)
    assert str(err).startswith(f"{tmp_path / 'bad.yaml'}:14: segments[1].triggers[0].value:")


def test_unknown_field_names_its_own_line(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD.replace("    min_dwell_s: 30\n", "    min_dwell_s: 30\n    dwell: 5\n"))
    assert (err.field, err.line) == ("segments[0].dwell", 7)
    assert "unknown field" in str(err)


def test_missing_field_points_at_its_parent(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD.replace("  category: 服饰\n", ""))
    assert err.field == "show.category"
    assert err.line == 1
    assert "Field required" in str(err)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (("        topic: size_fit\n", ""), "segments[1].triggers[0]", "needs a topic"),
        (("topic: size_fit\n        window", "topic: sizes\n        window"), "segments[1].triggers[0].topic",
         "unknown topic 'sizes'"),
        (("value: 0.15", "value: 15"), "segments[1].triggers[0]", "share between 0 and 1"),
        (("op: \">=\"", "op: \"=>\""), "segments[1].triggers[0].op", "Input should be"),
        (("  - name: 尺码答疑", "  - name: 开场"), "segments[1].name", "used twice"),
        (("      - 想要的扣1", "      - 点个关注吧"), "prompt_pools[0].prompts[0].text", "add `match"),
        (("  cadence_s: 240", "  cadence_s: 5"), "coupons.cadence_s", "greater than or equal to 30"),
    ],
)
def test_semantic_errors_name_the_field(
    tmp_path: Path, change: tuple[str, str], field: str, message: str
) -> None:
    assert change[0] in GOOD
    err = _error(tmp_path, GOOD.replace(*change))
    assert err.field == field
    assert message in str(err)
    assert err.line is not None and err.line > 1


def test_colon_in_a_talking_point_gets_a_hint(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD.replace("    min_dwell_s: 30\n", "    talking_points:\n      - 颜色: 三种\n"))
    assert err.field == "segments[0].talking_points[0]"
    assert err.line == 7
    assert "quote the text" in str(err)


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    twice = "    min_dwell_s: 30\n    min_dwell_s: 60\n"
    err = _error(tmp_path, GOOD.replace("    min_dwell_s: 30\n", twice))
    assert (err.field, err.line) == ("segments[0].min_dwell_s", 7)
    assert "duplicate key" in str(err)


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    assert "empty" in str(_error(tmp_path, "# nothing\n"))
    assert "is a mapping" in str(_error(tmp_path, "- a\n- b\n"))


def test_trigger_measures_a_real_window() -> None:
    sheet = parse_run_sheet(GOOD)
    trig = sheet.segments[1].triggers[0]
    st = RoomState("r")
    m = trig.measure(st.window(60, 0))
    assert (m.fired, m.comments, m.value) == (False, 0, 0.0)


def test_check_dir_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for p in library_dir().glob("*.yaml"):
        shutil.copy(p, tmp_path / p.name)
    assert main(["scripts", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(line.startswith("通过 ") for line in out)

    (tmp_path / "zz_bad.yaml").write_text(GOOD.replace("value: 0.15", "value: abc"), encoding="utf-8")
    results = check_dir(tmp_path)
    assert [r.error is None for r in results] == [True, True, True, False]
    assert main(["scripts", "check", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    bad = [line for line in captured.out.splitlines() if line.startswith("错误 ")]
    assert bad == [f"错误 {tmp_path / 'zz_bad.yaml'}:14: segments[1].triggers[0].value: "
                   "Input should be a valid number, unable to parse string as a number (got 'abc')"]
    assert "1/4" in captured.err


def test_cli_check_missing_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scripts", "check", str(tmp_path / "none")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
