"""Run-sheet checks: the new fields (max dwell, opening, variants, votes, offers, answer cards), their errors,
and the warnings (offer depth and concurrency, coupon budget vs cadence, compliance terms, platforms) with
file, line and field; the compliance lexicon on its own; `livebot scripts check` and loading."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.advisors.engine import build_engine, check_limits
from bot.cli import main
from bot.config import AdvisorsConfig
from bot.errors import ConfigError, ScriptError
from bot.scripts import (
    CheckLimits,
    check_run_sheet,
    library_names,
    load_run_sheet,
    parse_run_sheet,
)
from nlp.compliance import ComplianceLexicon, default_compliance

# An authored show with every new field; line numbers below are this text's (1-based).
SHOW = """\
show:
  name: 测试专场
  category: 服饰
  planned_minutes: 90
opening:
  deadline_s: 120
  checklist:
    - name: 人设
      hint: 主播身高体重
    - 场景
    - 核心卖点
segments:
  - name: 开场
    talking_points: [欢迎来到直播间]
    min_dwell_s: 30
    max_dwell_s: 120
  - name: 价格
    talking_points: [今天直播间到手 699]
    variants:
      douyin: [点小黄车 1 号链接]
      taobao: [点宝贝口袋 1 号]
    max_dwell_s: 180
  - name: 收尾
prompt_pools:
  - name: 互动
    prompts:
      - text: 想要燕麦色扣1, 驼色扣2
        options:
          - {label: 燕麦色, match: ["1"]}
          - 扣2 驼色
        window_s: 40
coupons:
  cadence_s: 300
  budget: 18
  per_hour: 12
offers:
  - name: 到手价
    list_price: 990
    price: 699
    segments: [价格]
  - name: 满300减30
    threshold: 300
    amount_off: 30
answer_cards:
  - topic: size_fit
    title: 尺码怎么选
    answer: 100斤S, 120斤M
"""


def test_new_fields_parse() -> None:
    sheet, warnings = check_run_sheet(SHOW, file="show.yaml")
    assert warnings == []
    assert sheet.opening.deadline_s == 120
    assert [c.name for c in sheet.opening.checklist] == ["人设", "场景", "核心卖点"]
    assert sheet.opening.checklist[0].hint == "主播身高体重" and sheet.opening_segment.name == "开场"
    price = sheet.segment("价格")
    assert price is not None and price.max_dwell_s == 180
    assert price.talking_points_for("douyin") == ("点小黄车 1 号链接",)
    assert price.talking_points_for("kuaishou") == ("今天直播间到手 699",)  # no variant: the default
    vote = sheet.prompt_pools[0].prompts[0]
    assert [(o.label, o.keywords) for o in vote.options] == [("燕麦色", ("1",)), ("扣2 驼色", ("2",))]
    assert vote.keywords == ("1", "2") and vote.window_s == 40
    assert [round(o.depth, 3) for o in sheet.offers] == [0.294, 0.1]
    card = sheet.answer_card("size_fit")
    assert card is not None and card.title == "尺码怎么选" and sheet.answer_card("shipping") is None


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        ("    max_dwell_s: 120\n", "    max_dwell_s: 20\n", 16, "segments[0].max_dwell_s",
         "max_dwell_s 20 is below min_dwell_s 30"),
        ("      douyin: [点小黄车 1 号链接]\n", "      Douyin!: [点小黄车 1 号链接]\n", 19,
         "segments[1].variants",
         "platform 'Douyin!' must be a lowercase source name"),
        ("          - 扣2 驼色\n", "", 28, "prompt_pools[0].prompts[0].options",
         "a vote needs at least two options"),
        ("          - 扣2 驼色\n", "          - {label: 驼色, match: ['1']}\n", 30,
         "prompt_pools[0].prompts[0].options[1]", "'1' would count for both '燕麦色' and '驼色'"),
        ("          - 扣2 驼色\n", "          - 驼色\n", 30, "prompt_pools[0].prompts[0].options[1]",
         "cannot tell what a vote for '驼色' looks like"),
        ("    - 场景\n", "    - 人设\n", 10, "opening.checklist[1]", "checklist item '人设' is listed twice"),
        ("    price: 699\n", "    price: 1699\n", 37, "offers[0]", "price 1699 is above list_price 990"),
        ("    amount_off: 30\n", "", 41, "offers[1]", "a 满减 offer needs both threshold and amount_off"),
        ("    amount_off: 30\n", "    off: 30\n", 41, "offers[1]", "YAML reads on/off/yes/no as true/false"),
        ("    segments: [价格]\n", "    segments: [价钱]\n", 40, "offers[0].segments[0]",
         "no segment named '价钱'"),
        ("  - topic: size_fit\n", "  - topic: sizes\n", 45, "answer_cards[0].topic", "unknown topic 'sizes'"),
    ],
)
def test_bad_new_fields_name_file_line_and_field(
    old: str, new: str, line: int, field: str, message: str
) -> None:
    assert old in SHOW
    with pytest.raises(ScriptError) as err:
        parse_run_sheet(SHOW.replace(old, new, 1), file="show.yaml")
    assert (err.value.file, err.value.line) == ("show.yaml", line), str(err.value)
    assert err.value.field is not None and err.value.field.startswith(field), str(err.value)
    assert message in str(err.value)


def warnings_of(text: str, **limits: object) -> list[tuple[int, str, str, str | None]]:
    _, warnings = check_run_sheet(text, file="w.yaml", limits=CheckLimits(**limits))  # type: ignore[arg-type]
    return [(w.line, w.field, w.rule, w.term) for w in warnings]


def test_discount_depth_and_concurrent_offers_warn_with_line() -> None:
    deep = SHOW.replace("    list_price: 990\n", "    list_price: 1899\n")
    assert warnings_of(deep) == [(37, "offers[0]", "discount_depth", None)]
    _, (w,) = check_run_sheet(deep, file="w.yaml")
    assert str(w).startswith("w.yaml:37: offers[0]: offer '到手价' takes 63% off, deeper than 30%")
    # A 20 % limit flags the 29 % offer too; with one concurrent offer allowed, 价格 (two at once) is flagged.
    assert [x[2] for x in warnings_of(SHOW, max_discount=0.2)] == ["discount_depth"]
    assert warnings_of(SHOW, max_concurrent_offers=1) == [(36, "offers", "concurrent_offers", None)]
    _, (w,) = check_run_sheet(SHOW, file="w.yaml", limits=CheckLimits(max_concurrent_offers=1))
    assert "2 offers run at once in segment '价格' (到手价, 满300减30); keep it to 1" in w.message


def test_coupon_budget_and_cap_inconsistent_with_cadence() -> None:
    short = SHOW.replace("  budget: 18\n", "  budget: 10\n")
    assert warnings_of(short) == [(34, "coupons.budget", "coupon_budget", None)]
    _, (w,) = check_run_sheet(short, file="w.yaml")
    assert w.message == ("budget 10 drops runs out after 50 min at one every 300 s; the show is planned for "
                         "90 min (18 drops)")
    capped = SHOW.replace("  per_hour: 12\n", "  per_hour: 6\n")
    assert warnings_of(capped) == [(35, "coupons.per_hour", "coupon_per_hour", None)]
    # No coupon plan at all: the config's default budget (10 at 300 s) against the planned 90 minutes.
    bare = "show: {name: 小场, category: 食品}\nsegments:\n  - name: 开场\n"
    assert warnings_of(bare) == [(1, "coupons", "coupon_budget", None)]  # not written: the sheet's first line
    assert warnings_of(bare, coupon_budget=18) == []


def test_compliance_terms_warn_with_line_field_and_term() -> None:
    text = (SHOW.replace("[欢迎来到直播间]", "[欢迎来到直播间, 全网最低价 100%纯羊毛]")
            .replace("      taobao: [点宝贝口袋 1 号]", "      taobao: [国家级工艺, 第一次来的点关注]")
            .replace("    answer: 100斤S, 120斤M", "    answer: 100斤S, 绝对合身"))
    got = warnings_of(text)
    assert got == [
        (14, "segments[0].talking_points[1]", "compliance", "全网最低"),
        (14, "segments[0].talking_points[1]", "compliance", "100%"),
        (21, "segments[1].variants.taobao[0]", "compliance", "国家级"),
        (47, "answer_cards[0].answer", "compliance", "绝对"),
    ]  # 第一次 is an ordinary word (the lexicon's ignore list)
    _, warnings = check_run_sheet(text, file="w.yaml")
    assert str(warnings[2]) == (
        "w.yaml:21: segments[1].variants.taobao[0]: 绝对化用语「国家级」 (advertising law): "
        "rephrase or back it with evidence"
    )
    banned = SHOW.replace("[欢迎来到直播间]", "[顺便推荐一款保本理财产品]")
    assert {(w[3], w[2]) for w in warnings_of(banned)} == {("保本", "compliance"), ("理财产品", "compliance")}


def test_unknown_platform_variant_warns() -> None:
    text = SHOW.replace("      taobao:", "      weibo:")
    assert warnings_of(text) == [(21, "segments[1].variants.weibo", "platform", None)]


def test_compliance_lexicon_rules() -> None:
    lex = default_compliance()
    assert [h.term for h in lex.find("驼色最显白, 最后 50 件")] == ["最显白"]  # 最后 is ordinary
    # The longest match wins across groups.
    assert [(h.term, h.group) for h in lex.find("这是处方药")] == [("处方药", "prescription_drug")]
    assert lex.find("第一次来, 第一件半价") == []
    # Comments: the plain words only; a viewer asking 哪个最显白 is not quoting a claim.
    assert lex.comment_terms("主播说全网最低") == ("全网最低",)
    assert lex.comment_terms("哪个颜色最显白") == ()
    custom = ComplianceLexicon.from_mapping(
        {"groups": {"brand": {"label": "竞品", "words": ["某宝"], "comments": False}}, "ignore": []}
    )
    assert [h.label for h in custom.find("比某宝便宜")] == ["竞品"]
    assert custom.comment_terms("比某宝便宜") == ()
    with pytest.raises(ValueError, match="groups.brand: unknown key"):
        ComplianceLexicon.from_mapping({"groups": {"brand": {"word": ["x"]}}})


def test_shipped_run_sheets_use_the_new_fields_without_warnings() -> None:
    for name in library_names():
        loaded = load_run_sheet(name)
        sheet = loaded.sheet
        assert loaded.warnings == (), [str(w) for w in loaded.warnings]
        assert all(s.max_dwell_s for s in sheet.segments[:-1]), name
        assert [c.name for c in sheet.opening.checklist] == ["人设", "场景", "核心卖点"], name
        assert len(sheet.answer_cards) >= 4, name
        assert any(p.options for pool in sheet.prompt_pools for p in pool.prompts), name
    apparel = load_run_sheet("apparel").sheet
    price = apparel.segment("价格")
    assert price is not None and set(price.variants) == {"douyin", "taobao"}
    assert apparel.offers and max(o.depth for o in apparel.offers) <= 0.3


def test_scripts_check_prints_warnings_and_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "warned.yaml").write_text(SHOW.replace("    list_price: 990\n", "    list_price: 1899\n"),
                                          encoding="utf-8")
    assert main(["scripts", "check", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "通过" in out and "1 条警告" in out
    assert f"警告 {tmp_path / 'warned.yaml'}:37: offers[0]: offer '到手价' takes 63% off" in out
    assert "1 条警告 (不影响通过" in err
    # A stricter config flags more; an error still fails the whole check.
    cfg = tmp_path / "strict.toml"
    cfg.write_text("[advisors.checks]\nmax_discount = 0.05\n", encoding="utf-8")
    (tmp_path / "bad.yaml").write_text(SHOW.replace("    max_dwell_s: 120\n", "    max_dwell_s: 20\n"),
                                       encoding="utf-8")
    assert main(["scripts", "check", "--config", str(cfg), str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "bad.yaml:16: segments[0].max_dwell_s: max_dwell_s 20 is below min_dwell_s 30" in out
    assert out.count("警告") == 3  # both offers of warned.yaml at 5 %, and its one-line summary
    assert "1/2 个话术脚本有错误" in err


def test_loading_logs_warnings_and_a_bad_lexicon_is_a_config_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "show.yaml"
    path.write_text(SHOW.replace("[欢迎来到直播间]", "[全网最低价]"), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="bot.advisors.engine"):
        engine = build_engine("demo", AdvisorsConfig(script=str(path)))
    assert engine.plan.show.name == "测试专场"
    assert [r.getMessage() for r in caplog.records] == [
        f"room=demo run-sheet warning: {path}:14: segments[0].talking_points[0]: 绝对化用语「全网最低」 "
        "(advertising law): rephrase or back it with evidence"
    ]
    lexicon = tmp_path / "lexicon.yaml"
    lexicon.write_text("groups:\n  mine:\n    label: 自定义\n    words: [欢迎]\n", encoding="utf-8")
    settings = AdvisorsConfig.model_validate(
        {"script": str(path), "checks": {"compliance_lexicon": str(lexicon)}}
    )
    _, warnings = check_run_sheet(SHOW, limits=check_limits(settings))
    assert [w.term for w in warnings] == ["欢迎"]
    broken = AdvisorsConfig.model_validate({"checks": {"compliance_lexicon": str(tmp_path / "nope.yaml")}})
    with pytest.raises(ConfigError, match=r"advisors\.checks\.compliance_lexicon"):
        check_limits(broken)
