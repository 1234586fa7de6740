"""Replay report: stored sessions → one self-contained HTML file (plotly inlined once) and CSV exports.

`bot.outputs.report_data.build_session_report` computes a `SessionReport` in one streaming pass over the
store; this module only renders it. `render_report` draws one session, `render_comparison` puts several
side by side on an elapsed-time axis ("this week vs last week"), `write_csv` exports the per-minute
series and the question table (UTF-8 with BOM, so Excel shows the Chinese). `write_reports` is what
`livebot replay --report` and `livebot report` call.

The timeline is one plotly figure with subplots on one shared time axis. Layers (advisor suggestions,
run-sheet segments, extra per-minute panels) are data in the SessionReport, so a later module adds a
layer by adding data, not by editing the figure code.
"""

from __future__ import annotations

import csv
import functools
import html
import json
import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import __version__
from bot.events import platform_label
from bot.outputs.report_data import (
    KIND_LABELS,
    SENTIMENT_LABELS,
    STATE_LABELS,
    TOPIC_LABELS,
    HtmlSection,
    MinuteRow,
    SeriesPanel,
    SessionReport,
    Targets,
    build_session_report,
    format_clock,
    format_datetime,
    topic_label,
)
from bot.outputs.store import Store
from bot.sources.replay import SKIP_LABELS
from bot.state import PLATFORM_LATE_MS

if TYPE_CHECKING:
    from bot.analytics_trend import AnalyticsSettings

__all__ = [
    "build_session_report",
    "render_comparison",
    "render_report",
    "write_csv",
    "write_reports",
    "HtmlSection",
    "SeriesPanel",
    "SessionReport",
    "Targets",
]

TEMPLATE = Path(__file__).with_name("report_template.html")
MAX_SUGGESTION_ROWS = 300
"""Suggestions listed in the report table; the rest are counted (all of them are on the timeline)."""
QUESTIONS_PER_TOPIC = 6
CSV_QUESTIONS = 500

_COLORS = {"pos": "#16a34a", "neu": "#cbd5e1", "neg": "#dc2626", "accent": "#2563eb"}
_TOPIC_COLORS = {
    "price": "#2563eb", "coupon": "#d97706", "size_fit": "#7c3aed", "link_howto": "#0891b2",
    "stock": "#db2777", "shipping": "#65a30d", "quality": "#9a3412", "after_sales": "#475569",
    "usage": "#0d9488", "host": "#a16207", "other": "#94a3b8",
}
_SESSION_COLORS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#be123c")
_FONT = ('"PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", "WenQuanYi Micro Hei", '
         '"Helvetica Neue", Arial, sans-serif')
_PANEL_PX = 165
_GAP_PX = 46
_MARGIN = {"l": 60, "r": 60, "t": 34, "b": 36}


@functools.cache
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


@functools.cache
def _template() -> string.Template:
    return string.Template(TEMPLATE.read_text(encoding="utf-8"))


# -- formatting -----------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: float) -> str:
    """Thousands separators; floats keep one decimal unless whole."""
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _pct(share: float, digits: int = 1) -> str:
    return f"{share * 100:.{digits}f}%"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} 小时 {m} 分"
    if m:
        return f"{m} 分 {s} 秒" if s else f"{m} 分钟"
    return f"{s} 秒"


def _minute_of(report: SessionReport, ts: int) -> int:
    return (ts - report.start_ts) // 60_000 + 1


def _json_script(element_id: str, figure: Mapping[str, Any]) -> str:
    # "<" escaped as \u003c: the JSON can never close the script element, whatever a comment contains.
    payload = json.dumps(figure, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return (
        f'<div id="{_e(element_id)}" class="chart"></div>\n'
        f'<script type="application/json" data-figure="{_e(element_id)}">{payload}</script>'
    )


def _page(title: str, body: str) -> str:
    return _template().substitute(
        title=_e(title), plotly_js=_plotly_js(), body=body, version=_e(__version__)
    )


# -- figures --------------------------------------------------------------------------------------


class _Panel:
    """One subplot of a stacked figure: traces, y axis options, optional secondary y axis."""

    def __init__(
        self, title: str, traces: list[dict[str, Any]], *, height_px: int = _PANEL_PX,
        yaxis: dict[str, Any] | None = None, y2: dict[str, Any] | None = None,
    ) -> None:
        self.title = title
        self.traces = traces
        self.height_px = height_px
        self.yaxis = yaxis or {}
        self.y2 = y2


def _stack_panels(
    panels: Sequence[_Panel], xaxis: Mapping[str, Any], *, shapes: Sequence[Mapping[str, Any]] = (),
    annotations: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Subplots on one shared x axis (every x matches the first), a legend per panel."""
    n = len(panels)
    plot_px = sum(p.height_px for p in panels) + _GAP_PX * (n - 1)
    layout: dict[str, Any] = {
        "height": plot_px + _MARGIN["t"] + _MARGIN["b"],
        "margin": _MARGIN,
        "font": {"family": _FONT, "size": 12, "color": "#1f2933"},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "hovermode": "x unified",
        "hoverlabel": {"font": {"family": _FONT}},
        "bargap": 0.15,
        "shapes": list(shapes),
    }
    notes = list(annotations)
    data: list[dict[str, Any]] = []
    top = 1.0
    extra_axis = n
    for i, panel in enumerate(panels, start=1):
        frac = panel.height_px / plot_px
        domain = [max(0.0, top - frac), top]
        top -= frac + _GAP_PX / plot_px
        suffix = "" if i == 1 else str(i)
        x_id, y_id = f"x{suffix}", f"y{suffix}"
        axis = {**xaxis, "anchor": y_id, "showticklabels": i == n, "gridcolor": "#eef2f6"}
        if i > 1:
            axis["matches"] = "x"
        if i < n:
            axis.pop("title", None)  # the axis title goes under the bottom panel only
        layout[f"xaxis{suffix}"] = axis
        layout[f"yaxis{suffix}"] = {
            "domain": domain, "anchor": x_id, "gridcolor": "#eef2f6", "zerolinecolor": "#e2e8f0",
            "automargin": True, **panel.yaxis,
        }
        legend = f"legend{suffix}"
        layout[legend] = {
            "orientation": "h", "x": 1, "xanchor": "right", "y": domain[1], "yanchor": "bottom",
            "bgcolor": "rgba(255,255,255,0)", "font": {"size": 11},
        }
        notes.append({
            "text": f"<b>{_e(panel.title)}</b>", "x": 0, "xref": "paper", "xanchor": "left",
            "y": domain[1], "yref": "paper", "yanchor": "bottom", "showarrow": False, "font": {"size": 13},
        })
        y2_id = None
        if panel.y2 is not None:
            extra_axis += 1
            y2_id = f"y{extra_axis}"
            layout[f"yaxis{extra_axis}"] = {
                "overlaying": y_id, "side": "right", "anchor": x_id, "showgrid": False, "automargin": True,
                **panel.y2,
            }
        for trace in panel.traces:
            secondary = trace.pop("_secondary", False)
            trace.update(xaxis=x_id, yaxis=y2_id if secondary and y2_id else y_id, legend=legend)
            data.append(trace)
    layout["annotations"] = notes
    return {"data": data, "layout": layout}


def _minute_trace(
    name: str, x: list[str], y: Sequence[float | None], *, kind: str = "line", color: str | None = None,
    hover: str = "%{y}", **extra: Any,
) -> dict[str, Any]:
    trace: dict[str, Any] = {
        "type": "bar" if kind == "bar" else "scatter", "name": name, "x": x, "y": list(y),
        # Minute rows are bins: drawn in the middle of their minute.
        "xperiod": 60_000, "xperiodalignment": "middle",
        "hovertemplate": f"{hover}<extra>{_e(name)}</extra>",
    }
    if kind == "bar":
        trace["marker"] = {"color": color} if color else {}
    else:
        trace["mode"] = "lines"
        trace["line"] = {"width": 1.8, **({"color": color} if color else {})}
        if kind == "area":
            trace["line"]["width"] = 0.5
    trace.update(extra)
    return trace


def _rate(num: int, den: int) -> float | None:
    return round(100 * num / den, 2) if den else None


def _timeline_figure(report: SessionReport) -> dict[str, Any]:
    minutes = report.minutes
    x = [format_datetime(m.start_ts, seconds=True) for m in minutes]
    panels: list[_Panel] = []
    if report.layers:
        panels.append(_strip_panel(report))
    panels.append(_Panel("弹幕 / 分钟", [
        _minute_trace("弹幕", x, [m.comments for m in minutes], kind="bar", color="#93c5fd"),
        _minute_trace("疑问", x, [m.confused for m in minutes], color="#d97706"),
        _minute_trace("购买意向", x, [m.buying_intent for m in minutes], color="#16a34a"),
    ], yaxis={"rangemode": "tozero"}))
    sentiment = []
    for key in ("neg", "neu", "pos"):
        values = [getattr(m, key) for m in minutes]
        trace = _minute_trace(
            SENTIMENT_LABELS[key], x, values, kind="area", color=_COLORS[key], hover="%{y:.1f}%",
            stackgroup="sentiment", fillcolor=_COLORS[key],
        )
        sentiment.append(trace)
    sentiment[0]["groupnorm"] = "percent"
    panels.append(_Panel("情绪占比", sentiment, yaxis={"range": [0, 100], "ticksuffix": "%"}))
    confusion = [
        _minute_trace("全部疑问", x, [_rate(m.confused, m.analyzed) for m in minutes], color="#475569",
                      hover="%{y:.1f}%", line={"width": 1.4, "dash": "dot", "color": "#475569"}),
    ]
    for topic, _ in report.topics[:5]:
        confusion.append(_minute_trace(
            topic_label(topic), x, [_rate(m.confused_by_topic.get(topic, 0), m.analyzed) for m in minutes],
            color=_TOPIC_COLORS.get(topic), hover="%{y:.1f}%",
        ))
    panels.append(_Panel("疑问率 · 按话题 (占已分析弹幕)", confusion,
                         yaxis={"ticksuffix": "%", "rangemode": "tozero"}))
    engagement = [
        _minute_trace("点赞", x, [m.likes for m in minutes], kind="bar", color="#fbcfe8", _secondary=True),
        _minute_trace("进房", x, [m.enters for m in minutes], color="#2563eb"),
        _minute_trace("关注", x, [m.follows for m in minutes], color="#7c3aed"),
        _minute_trace("分享", x, [m.shares for m in minutes], color="#0891b2"),
        _minute_trace("礼物", x, [m.gifts for m in minutes], color="#d97706"),
    ]
    panels.append(_Panel("互动 / 分钟", engagement, yaxis={"rangemode": "tozero"},
                         y2={"title": {"text": "点赞", "font": {"size": 11}}, "rangemode": "tozero"}))
    if any(m.online is not None for m in minutes):
        panels.append(_Panel("在线人数", [
            _minute_trace("在线", x, [m.online for m in minutes], color="#0f766e", fill="tozeroy",
                          fillcolor="rgba(15,118,110,0.08)", connectgaps=True),
        ], yaxis={"rangemode": "tozero"}))
    for extra in report.extra_panels:
        panels.append(_extra_panel(extra, x))
    x_range = [format_datetime(report.start_ts, seconds=True),
               format_datetime(max(report.end_ts, report.start_ts + 60_000), seconds=True)]
    xaxis = {"type": "date", "range": x_range, "tickformat": "%H:%M", "hoverformat": "%H:%M"}
    shapes, notes = _layer_shapes(report)
    return _stack_panels(panels, xaxis, shapes=shapes, annotations=notes)


def _strip_panel(report: SessionReport) -> _Panel:
    traces = []
    names = [layer.name for layer in report.layers]
    for layer in report.layers:
        xs = [format_datetime(m.ts, seconds=True) for m in layer.markers]
        symbols = [
            layer.symbol + ("-open" if m.state in ("dismissed", "expired") else "") for m in layer.markers
        ]
        traces.append({
            "type": "scatter", "mode": "markers", "name": layer.name, "x": xs, "y": [layer.name] * len(xs),
            "marker": {
                "color": layer.color, "symbol": symbols, "size": 9,
                "line": {"width": 1, "color": layer.color},
            },
            "hovertext": [m.hover for m in layer.markers], "hoverinfo": "text", "showlegend": False,
        })
    return _Panel(
        "助手建议", traces, height_px=24 * len(names) + 16,
        yaxis={"type": "category", "categoryorder": "array", "categoryarray": list(reversed(names)),
               "fixedrange": True, "showgrid": False},
    )


def _extra_panel(panel: SeriesPanel, x: list[str]) -> _Panel:
    traces = []
    for s in panel.series:
        values = [None if v is None else (v * 100 if panel.percent else v) for v in s.values]
        extra: dict[str, Any] = {"_secondary": s.secondary}
        if s.kind == "area":
            extra.update(fill="tozeroy")
        trace = _minute_trace(s.name, x, values, kind="bar" if s.kind == "bar" else "line", color=s.color,
                              hover="%{y:.1f}%" if panel.percent else "%{y}", **extra)
        if s.dash and trace.get("line") is not None:
            trace["line"]["dash"] = s.dash
        traces.append(trace)
    yaxis = {"ticksuffix": "%"} if panel.percent else {"rangemode": "tozero"}
    has_y2 = any(s.secondary for s in panel.series)
    return _Panel(panel.title, traces, height_px=round(_PANEL_PX * panel.height), yaxis=yaxis,
                  y2={"rangemode": "tozero"} if has_y2 else None)


def _layer_shapes(report: SessionReport) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    shapes: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    for i, band in enumerate(report.bands):
        x0, x1 = format_datetime(band.start_ts, seconds=True), format_datetime(band.end_ts, seconds=True)
        if i % 2 == 0:
            shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1, "y0": 0, "y1": 1,
                           "fillcolor": "rgba(124,58,237,0.05)", "line": {"width": 0}, "layer": "below"})
        notes.append({
            "text": _e(band.label), "x": x0, "xref": "x", "xanchor": "left", "y": 0, "yref": "paper",
            "yanchor": "top", "yshift": -22, "showarrow": False, "font": {"size": 10, "color": "#6d28d9"},
        })
    for layer in report.layers:
        if not layer.vertical_lines:
            continue
        for m in layer.markers:
            x = format_datetime(m.ts, seconds=True)
            shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                           "line": {"color": layer.color, "width": 1, "dash": "dot"}, "opacity": 0.45})
    return shapes, notes


# -- single-session sections -----------------------------------------------------------------------------


def _card(label: str, value: str, detail: str = "", *, wide: bool = False) -> str:
    cls = "card wide" if wide else "card"
    d = f'<div class="d">{detail}</div>' if detail else ""
    return f'<div class="{cls}"><div class="k">{_e(label)}</div><div class="v">{value}</div>{d}</div>'


def _mix_bar(sentiment: Mapping[str, int], total: int) -> str:
    if not total:
        return '<div class="mix"></div>'
    spans = "".join(
        f'<span class="{k}" style="width:{100 * sentiment.get(k, 0) / total:.2f}%"></span>'
        for k in ("pos", "neu", "neg")
    )
    return f'<div class="mix">{spans}</div>'


def _headline_section(r: SessionReport) -> str:
    h = r.headline
    mix = (
        _mix_bar(h.sentiment, h.analyzed)
        + '<div class="legend">'
        + "".join(
            f'<span><i style="background:{_COLORS[k] if k != "neu" else "#94a3b8"}"></i>'
            f"{SENTIMENT_LABELS[k]} {_pct(h.sentiment_share(k))}</span>"
            for k in ("pos", "neu", "neg")
        )
        + "</div>"
    )
    cards = [
        _card("时长", _e(_duration(h.duration_s)), f"{format_clock(r.start_ts)}–{format_clock(r.end_ts)}"),
        _card("弹幕", _n(h.comments), f"已分析 {_n(h.analyzed)}"),
        _card("独立观众", _n(h.unique_viewers), f"发弹幕 {_n(h.commenters)} 人"),
        _card("弹幕 / 分钟", f"{h.comments_per_min:,.1f}"),
        _card("情绪", f"负面 {_pct(h.sentiment_share('neg'))}", mix, wide=True),
        _card("疑问率", _pct(h.confusion_rate), f"{_n(h.confused)} 条提问"),
        _card("购买意向", _n(h.buying_intent), "已拍 / 扣1 / 上车 …"),
        _card("点赞", _n(h.likes)),
        _card("礼物", _n(h.gifts), f"¥{h.gift_value:,.2f}"),
        _card("进房", _n(h.enters)),
        _card("关注", _n(h.follows)),
        _card("分享", _n(h.shares)),
        _card("峰值在线", _n(h.peak_online) if h.peak_online is not None else "—"),
    ]
    return (
        '<section id="overview"><h2>概览</h2>'
        '<p class="note">整场数据; 情绪与疑问率按已分析的弹幕计算。</p>'
        f'<div class="cards">{"".join(cards)}</div></section>'
    )


def _timeline_section(r: SessionReport) -> str:
    parts = []
    if r.layers:
        parts.append("上方标记为助手在回放中给出的建议 (悬停查看内容), 虚线为优惠券发放时间")
    if r.bands:
        parts.append("底色为话术段落")
    note = "每分钟一格, 所有图表共用同一时间轴 (拖动可缩放, 双击复原)。"
    if parts:
        note += "; ".join(parts) + "。"
    return (
        f'<section id="timeline"><h2>时间线</h2><p class="note">{_e(note)}</p>'
        f'{_json_script("fig-timeline", _timeline_figure(r))}</section>'
    )


def _targets_section(r: SessionReport) -> str:
    if not r.targets:
        return ""
    rows = []
    for t in r.targets:
        mark = '<span class="na">—</span>' if t.ok is None else (
            '<span class="ok">✓ 达标</span>' if t.ok else '<span class="bad">✗ 未达标</span>')
        rows.append(
            f"<tr><td>{_e(t.label)}</td><td class=\"n\">{_e(t.achieved)}</td><td>{_e(t.target)}</td>"
            f"<td>{mark}</td><td class=\"muted\">{_e(t.note)}</td></tr>"
        )
    return (
        '<section id="targets"><h2>节奏: 实际 vs 目标</h2>'
        '<p class="note">按助手在本场给出的建议计算 (回放时假设每条建议都照做)。</p>'
        '<table><thead><tr><th>指标</th><th class="n">实际</th><th>目标</th><th></th>'
        "<th>说明</th></tr></thead>"
        f'<tbody>{"".join(rows)}</tbody></table></section>'
    )


def _questions_section(r: SessionReport) -> str:
    h = r.headline
    groups = r.questions_by_topic(QUESTIONS_PER_TOPIC)
    if not groups:
        why = "本场没有识别到提问。" if h.analyzed else "本场弹幕未经分析 (分析降级或未启用), 无法识别提问。"
        return f'<section id="questions"><h2>观众在问什么</h2><p class="note">{why}</p></section>'
    cards = []
    for topic, n, qs in groups:
        top = qs[0].count
        items = []
        for q in qs:
            counts = q.example_counts if len(q.example_counts) == len(q.examples) else (0,) * len(q.examples)
            examples = "".join(
                f"<span>{_e(x)}" + (f" <b>×{_n(c)}</b>" if c and q.variants > 1 else "") + "</span>"
                for x, c in zip(q.examples, counts, strict=True)
            )
            tag = ' <span class="tag">同类问法合并</span>' if q.intent else ""
            qty = ""
            if q.quantities:
                qty = " · 常见: " + "、".join(f"{_e(v)} ×{c}" for v, c in q.quantities[:4])
            items.append(
                '<div class="q"><div class="head">'
                f'<span class="label">{_e(q.label)}{tag}</span>'
                f'<span class="count">×{_n(q.count)}</span></div>'
                f'<div class="bar" style="width:{100 * q.count / top:.1f}%"></div>'
                f'<div class="meta">高峰 {format_clock(q.peak_ts)} (第 {_minute_of(r, q.peak_ts)} 分钟, '
                f"{q.peak_count} 次/分) · {q.variants} 种问法{qty}</div>"
                f'<div class="ex">{examples}</div></div>'
            )
        share = n / h.confused if h.confused else 0
        cards.append(
            f'<div class="topic"><h3>{_e(topic_label(topic))}<span class="cnt">{_n(n)} 条 · 占提问 '
            f'{_pct(share)}</span></h3>{"".join(items)}</div>'
        )
    return (
        '<section id="questions"><h2>观众在问什么</h2>'
        f'<p class="note">共 {_n(h.confused)} 条提问, 近似问题已合并 (如 多少钱 / 多少米 / 价格多少) 为 '
        f"{_n(r.question_groups_total)} 组; 每组列出最常见的 3 种原话。</p>"
        f'<div class="topics">{"".join(cards)}</div></section>'
    )


def _negative_section(r: SessionReport) -> str:
    base = r.headline.sentiment_share("neg")
    head = (
        '<section id="negative"><h2>负面时刻</h2>'
        f'<p class="note">以 2 分钟窗口检测: 负面弹幕 ≥ 5 条, 且占比至少为全场基线 ({_pct(base)}) '
        "的 2 倍并高出 10 个百分点。</p>"
    )
    if not r.negative_moments:
        return head + '<p class="muted">本场没有明显的负面集中时段。</p></section>'
    cards = []
    for mo in r.negative_moments:
        ratio = "—" if math.isinf(mo.ratio) else f"{mo.ratio:.1f}×"
        topics = "、".join(f"{_e(topic_label(t))} {c}" for t, c in mo.topics)
        examples = "".join(f"<li>{_e(x)}</li>" for x in mo.examples)
        cards.append(
            f'<div class="moment"><div class="when">{format_clock(mo.start_ts)}–{format_clock(mo.end_ts)}'
            f' <span class="muted">(第 {_minute_of(r, mo.start_ts)} 分钟起)</span></div>'
            f'<div><span class="stat">负面 {_pct(mo.share)}</span> '
            f"({mo.negative}/{mo.analyzed} 条, 基线的 {ratio})"
            + (f" · 话题: {topics}" if topics else "")
            + f"</div><ul>{examples}</ul></div>"
        )
    return head + f'<div class="moments">{"".join(cards)}</div></section>'


def _cloud(words: Sequence[tuple[str, int]]) -> str:
    if not words:
        return '<span class="muted">(无)</span>'
    top = words[0][1]
    spans = []
    for word, count in words:
        w = math.sqrt(count / top)
        size = 12 + 16 * w
        alpha = 0.45 + 0.55 * w
        spans.append(
            f'<span style="font-size:{size:.1f}px;color:rgba(30,64,175,{alpha:.2f})">'
            f"{_e(word)}<sub>{count}</sub></span>"
        )
    return f'<div class="cloud">{"".join(spans)}</div>'


def _segments_section(r: SessionReport) -> str:
    if not r.segments:
        return ""
    by_runsheet = r.segments[0].source == "runsheet"
    note = ("按话术段落切分" if by_runsheet else "按时间等分") + "; 关键词由 jieba 分词提取, "
    note += "已去除停用词与表情; 字号越大出现越多; 「本段特有」为本段出现比例明显高于整场的词。"
    cards = []
    for s in r.segments:
        topics = "、".join(f"{_e(topic_label(t))} {c}" for t, c in s.top_topics)
        when = f"{format_clock(s.start_ts)}–{format_clock(s.end_ts)} · " if by_runsheet else ""
        special = ""
        if s.distinctive:
            special = '<div class="special">本段特有: ' + "、".join(
                f"{_e(w)} <sub>{n}</sub>" for w, n in s.distinctive[:8]) + "</div>"
        cards.append(
            f'<div class="segment"><h3>{_e(s.name)}</h3>'
            f'<div class="meta">{when}弹幕 {_n(s.comments)}'
            f" · 负面 {_pct(s.neg_share)} · 疑问 {_pct(s.confusion_rate)}"
            + (f" · 主要提问: {topics}" if topics else "")
            + f"</div>{_cloud(s.keywords[:24])}{special}</div>"
        )
    return (
        f'<section id="segments"><h2>分段关键词与情绪</h2><p class="note">{_e(note)}</p>'
        f'<div class="segments">{"".join(cards)}</div></section>'
    )


def time_to_decide_s(s: Mapping[str, Any]) -> float | None:
    """Seconds from a suggestion to its acceptance or dismissal (the store's state_ts); None if undecided."""
    state_ts = s.get("state_ts") or (s.get("data") or {}).get("state_ts")
    if s.get("state") not in ("accepted", "dismissed") or not state_ts:
        return None
    return max(0.0, (int(state_ts) - int(s["created_ts"])) / 1000)


def _decided_cell(s: Mapping[str, Any]) -> str:
    t = time_to_decide_s(s)
    if t is None:
        return '<td class="muted">—</td>'
    cls = "num" if s.get("state") == "accepted" else "muted"
    return f'<td class="{cls}">{t:.0f} 秒</td>'


def _vote_text(s: Mapping[str, Any]) -> str:
    vote = (s.get("data") or {}).get("vote")
    if not isinstance(vote, Mapping):
        return ""
    parts = " · ".join(f"{o.get('label')} {o.get('count')}" for o in vote.get("options") or ())
    return f"<br><span class=\"muted\">投票: {_e(parts)} (共 {_e(vote.get('total'))} 票)</span>"


def _suggestions_section(r: SessionReport) -> str:
    if not r.suggestions:
        return ""
    rows = []
    for s in r.suggestions[:MAX_SUGGESTION_ROWS]:
        kind = str(s.get("kind", ""))
        rows.append(
            f"<tr><td>{format_datetime(int(s['created_ts']), seconds=True)[11:]}</td>"
            f'<td><span class="pill {_e(kind)}">{_e(KIND_LABELS.get(kind, kind))}</span></td>'
            f"<td>{_e(s.get('text', ''))}{_vote_text(s)}</td>"
            f"<td class=\"muted\">{_e(s.get('reason', ''))}</td>"
            f"<td>{_e(STATE_LABELS.get(str(s.get('state')), s.get('state', '')))}</td>{_decided_cell(s)}</tr>"
        )
    waits = sorted(
        t for s in r.suggestions if s.get("state") == "accepted" and (t := time_to_decide_s(s)) is not None
    )
    accept_note = ""
    if waits:
        mid = len(waits) // 2
        median = waits[mid] if len(waits) % 2 else (waits[mid - 1] + waits[mid]) / 2
        accept_note = f" 采纳 {len(waits)} 条, 从建议到采纳中位 {median:.0f} 秒, 最长 {waits[-1]:.0f} 秒。"
        if r.data_quality.path is not None:
            accept_note += " (回放按“照做”计算, 建议一出即视为采纳; 处理用时在直播记录里才有意义)"
    counts: dict[str, int] = {}
    for s in r.suggestions:
        counts[str(s.get("kind"))] = counts.get(str(s.get("kind")), 0) + 1
    summary = " · ".join(f"{KIND_LABELS.get(k, k)} {v}" for k, v in counts.items())
    more = len(r.suggestions) - MAX_SUGGESTION_ROWS
    tail = f'<p class="muted">另有 {more} 条未列出 (时间线上全部可见)。</p>' if more > 0 else ""
    return (
        '<section id="suggestions"><h2>助手建议记录</h2>'
        f'<p class="note">共 {len(r.suggestions)} 条: {_e(summary)}。{_e(accept_note)}</p>'
        '<table><thead><tr><th>时间</th><th>类型</th><th>建议</th><th>理由</th><th>状态</th>'
        '<th title="从建议出现到采纳或忽略">处理用时</th></tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table>{tail}</section>'
    )


def _quality_section(r: SessionReport) -> str:
    q = r.data_quality
    p = q.pipeline
    rows: list[tuple[str, str]] = []
    if q.path:
        rows.append(("文件", _e(q.path)))
    if q.format or q.encoding:
        rows.append(("格式 / 编码", f"{_e(q.format or '—')} / {_e(q.encoding or '—')}"))
    if q.lines_read is not None:
        rows.append(("读取行数", _n(q.lines_read)))
    if q.events_read is not None:
        rows.append(("解析出的事件", _n(q.events_read)))
    skipped = "无"
    if q.skipped:
        skipped = f"{_n(q.skipped_total)} 行: " + "、".join(
            f"{_e(SKIP_LABELS.get(k, k))} ({_e(k)}) {_n(v)}" for k, v in sorted(q.skipped.items())
        )
    if q.lines_read is not None or q.skipped:
        rows.append(("跳过", skipped))
    if p:
        rows.append(("管道", f"收到 {_n(p.get('received', 0))} · 重复丢弃 {_n(p.get('duplicates', 0))} · "
                             f"已分析 {_n(p.get('analyzed', 0))} · 降级未分析 {_n(p.get('shed', 0))} · "
                             f"存储 {_n(p.get('stored', 0))} · 存储错误 {_n(p.get('store_errors', 0))}"))
    analysed = q.comments - q.unanalyzed_comments
    share = _pct(analysed / q.comments if q.comments else 0)
    rows.append(("本报告读取", f"事件 {_n(q.stored_events)} · 弹幕 {_n(q.comments)} · 已分析 {_n(analysed)}"
                              f" ({share}) · 未分析 {_n(q.unanalyzed_comments)}"))
    if q.platform_delays:
        late_s = PLATFORM_LATE_MS // 1000
        rows.append(("弹幕延迟", "；".join(
            f"{_e(platform_label(p))} 中位 {d.median_ms / 1000:.1f} 秒 · 90% 分位 {d.p90_ms / 1000:.1f} 秒 · "
            + (f'<span class="bad">超 {late_s} 秒 {_pct(d.late_share)}</span>' if d.late_share >= 0.1
               else f"超 {late_s} 秒 {_pct(d.late_share)}")
            + f" ({_n(d.comments)} 条)"
            for p, d in q.platform_delays.items()
        ) + f'<div class="muted">从观众发出 (平台时间) 到 livebot 收到; 超过 {late_s} 秒, '
            "该平台观众听到回答和口令都会晚。</div>"))
    if q.classifiers:
        rows.append(("分类器", "、".join(f"{_e(k)} {_n(v)}" for k, v in q.classifiers.items())))
    rows.append(("会话", f"{_e(r.session_id)} · 来源 {_e(r.source or '—')}"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<section id="quality"><h2>数据质量</h2><table class="kv"><tbody>{body}</tbody></table></section>'


def _extra_sections(sections: Iterable[HtmlSection]) -> str:
    return "".join(
        f'<section id="{_e(s.key)}"><h2>{_e(s.title)}</h2>{s.html}</section>' for s in sections
    )


def render_report(report: SessionReport) -> str:
    """One session as a self-contained HTML page (plotly inlined, no network needed to open it)."""
    r = report
    toc = [("overview", "概览"), ("timeline", "时间线")]
    if r.targets:
        toc.append(("targets", "节奏"))
    toc += [("questions", "观众在问什么"), ("negative", "负面时刻"), ("segments", "分段关键词")]
    if r.suggestions:
        toc.append(("suggestions", "建议记录"))
    toc += [(s.key, s.title) for s in r.extra_sections]
    toc.append(("quality", "数据质量"))
    nav = "".join(f'<a href="#{_e(k)}">{_e(v)}</a>' for k, v in toc)
    header = (
        '<header class="top"><h1>直播复盘报告</h1>'
        f'<div class="sub">直播间 <b>{_e(r.room)}</b> · {format_datetime(r.start_ts)} – '
        f"{format_clock(r.end_ts)} · 时长 {_e(_duration(r.headline.duration_s))} · "
        f"会话 {_e(r.session_id)}</div>"
        f'<nav class="toc">{nav}</nav></header>'
    )
    notices = "".join(
        f'<section class="notice" role="alert"><p class="bad">⚠ {_e(n)}</p></section>' for n in r.notices
    )
    body = "\n".join([
        header + notices, _headline_section(r), _timeline_section(r), _targets_section(r),
        _questions_section(r), _negative_section(r), _segments_section(r), _suggestions_section(r),
        _extra_sections(r.extra_sections), _quality_section(r),
    ])
    return _page(f"直播复盘 · {r.title}", body)


# -- comparison ----------------------------------------------------------------------------------------


def _session_name(r: SessionReport) -> str:
    return f"{r.room} {format_datetime(r.start_ts)}"


def _comparison_figure(reports: Sequence[SessionReport]) -> dict[str, Any]:
    rate, neg, conf = [], [], []
    for i, r in enumerate(reports):
        color = _SESSION_COLORS[i % len(_SESSION_COLORS)]
        x = [m.index for m in r.minutes]
        name = _session_name(r)
        common = {
            "mode": "lines", "type": "scatter", "x": x, "name": name, "line": {"color": color, "width": 1.8},
        }
        rate.append({**common, "y": [m.comments for m in r.minutes], "showlegend": True,
                     "hovertemplate": f"%{{y}}<extra>{_e(name)}</extra>"})
        neg.append({**common, "y": [_rate(m.neg, m.analyzed) for m in r.minutes], "showlegend": False,
                    "hovertemplate": f"%{{y:.1f}}%<extra>{_e(name)}</extra>"})
        conf.append({**common, "y": [_rate(m.confused, m.analyzed) for m in r.minutes], "showlegend": False,
                     "hovertemplate": f"%{{y:.1f}}%<extra>{_e(name)}</extra>"})
    panels = [
        _Panel("弹幕 / 分钟", rate, yaxis={"rangemode": "tozero"}),
        _Panel("负面占比", neg, yaxis={"ticksuffix": "%", "rangemode": "tozero"}),
        _Panel("疑问率", conf, yaxis={"ticksuffix": "%", "rangemode": "tozero"}),
    ]
    xaxis = {"type": "linear", "title": {"text": "开播后分钟"}, "rangemode": "tozero"}
    fig = _stack_panels(panels, xaxis)
    fig["layout"]["hovermode"] = "x unified"
    return fig


def _topic_figure(reports: Sequence[SessionReport]) -> dict[str, Any]:
    totals: dict[str, int] = {}
    for r in reports:
        for t, n in r.topics:
            totals[t] = totals.get(t, 0) + n
    topics = sorted(totals, key=lambda t: -totals[t])
    data = []
    for i, r in enumerate(reports):
        counts = dict(r.topics)
        analyzed = r.headline.analyzed
        data.append({
            "type": "bar", "name": _session_name(r), "x": [topic_label(t) for t in topics],
            "y": [_rate(counts.get(t, 0), analyzed) or 0 for t in topics],
            "marker": {"color": _SESSION_COLORS[i % len(_SESSION_COLORS)]},
            "hovertemplate": "%{x}: %{y:.2f}%<extra>" + _e(_session_name(r)) + "</extra>",
        })
    layout = {
        "barmode": "group", "height": 320, "margin": {"l": 60, "r": 20, "t": 30, "b": 40},
        "font": {"family": _FONT, "size": 12, "color": "#1f2933"},
        "yaxis": {"ticksuffix": "%", "gridcolor": "#eef2f6"},
        "legend": {"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"},
        "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff",
    }
    return {"data": data, "layout": layout}


def _delta(
    a: float, b: float, *, percent_points: bool = False, higher_is_bad: bool = False, neutral: bool = False
) -> str:
    """Change from a to b, red when worse, green when better (muted when unchanged or `neutral`)."""
    if percent_points:
        d = round((b - a) * 100, 1)
        text = f"{d:+.1f} 个百分点" if d else "±0 个百分点"
    else:
        if a == 0:
            return '<span class="muted">—</span>'
        d = round((b - a) / a * 100)
        text = f"{d:+d}%" if d else "±0%"
    if not d or neutral:
        return f'<span class="muted">{text}</span>'
    worse = d > 0 if higher_is_bad else d < 0
    cls = "delta-up" if worse else "delta-down"
    return f'<span class="{cls}">{text}</span>'


def _comparison_table(reports: Sequence[SessionReport]) -> str:
    rows: list[tuple[str, list[str], str]] = []

    def add(
        label: str, values: list[float], fmt: Any, *, pp: bool = False, bad: bool = False,
        neutral: bool = False,
    ) -> None:
        delta = ""
        if len(values) == 2:
            delta = _delta(values[0], values[-1], percent_points=pp, higher_is_bad=bad, neutral=neutral)
        rows.append((label, [fmt(v) for v in values], delta))

    hs = [r.headline for r in reports]
    add("时长 (分钟)", [h.duration_s / 60 for h in hs], lambda v: f"{v:,.1f}", neutral=True)
    add("弹幕", [h.comments for h in hs], _n)
    add("弹幕 / 分钟", [h.comments_per_min for h in hs], lambda v: f"{v:,.1f}")
    add("独立观众", [h.unique_viewers for h in hs], _n)
    add("正面占比", [h.sentiment_share("pos") for h in hs], _pct, pp=True)
    add("负面占比", [h.sentiment_share("neg") for h in hs], _pct, pp=True, bad=True)
    add("疑问率", [h.confusion_rate for h in hs], _pct, pp=True, bad=True)
    add("购买意向", [h.buying_intent for h in hs], _n)
    add("点赞", [h.likes for h in hs], _n)
    add("礼物", [h.gifts for h in hs], _n)
    add("进房", [h.enters for h in hs], _n)
    add("关注", [h.follows for h in hs], _n)
    add("分享", [h.shares for h in hs], _n)
    add("峰值在线", [h.peak_online or 0 for h in hs], _n)
    outs = [r.outcome for r in reports]
    if all(o is not None for o in outs):
        os_ = [o for o in outs if o is not None]

        def opt(label: str, values: list[float | None], fmt: Any, **kw: Any) -> None:
            if any(v is not None for v in values):
                if all(v is not None for v in values):
                    add(label, [float(v) for v in values if v is not None], fmt, **kw)
                else:  # a figure missing in one session: no change column for it
                    rows.append((label, ["—" if v is None else fmt(v) for v in values], ""))

        add("观众 (进房或互动)", [o.viewers for o in os_], _n)
        opt("互动率", [o.interaction_rate for o in os_], _pct, pp=True)
        opt("平均观看 (分钟)", [None if o.avg_watch_s is None else o.avg_watch_s / 60 for o in os_],
            lambda v: f"{v:,.1f}")
        opt("停留超 5 分钟", [o.long_share for o in os_], _pct, pp=True)
        opt("关注率", [o.follow_rate for o in os_], _pct, pp=True)
        opt("回访观众占比", [o.returning_share for o in os_], _pct, pp=True)
        opt("需求匹配", [o.need_match for o in os_], _pct, pp=True)
        opt("购买意向 / 分钟", [o.intent_per_min for o in os_], lambda v: f"{v:,.2f}")
        opt("本场评分 (0–10)", [o.score for o in os_], lambda v: f"{v:.1f}")
    head = "".join(
        f'<th class="n"><span style="color:{_SESSION_COLORS[i % len(_SESSION_COLORS)]}">●</span> '
        f"{_e(_session_name(r))}</th>" for i, r in enumerate(reports)
    )
    delta_head = '<th class="n">变化 (后 vs 前)</th>' if len(reports) == 2 else ""
    body = "".join(
        f"<tr><td>{_e(label)}</td>" + "".join(f'<td class="n">{v}</td>' for v in values)
        + (f'<td class="n">{delta}</td>' if len(reports) == 2 else "") + "</tr>"
        for label, values, delta in rows
    )
    mixes = "".join(
        f"<td>{_mix_bar(r.headline.sentiment, r.headline.analyzed)}</td>" for r in reports
    )
    body += f"<tr><td>情绪构成</td>{mixes}{'<td></td>' if len(reports) == 2 else ''}</tr>"
    return f"<table><thead><tr><th>指标</th>{head}{delta_head}</tr></thead><tbody>{body}</tbody></table>"


def _comparison_questions(reports: Sequence[SessionReport]) -> str:
    cols = []
    for i, r in enumerate(reports):
        items = "".join(
            f'<div class="q"><div class="head"><span class="label">{_e(q.label)}</span>'
            f'<span class="count">×{_n(q.count)}</span></div>'
            f'<div class="meta">{_e(topic_label(q.topic))} · 高峰 第 {_minute_of(r, q.peak_ts)} 分钟'
            + (f" · 如「{_e(q.examples[0])}」" if q.intent and q.examples else "") + "</div></div>"
            for q in r.questions[:8]
        ) or '<p class="muted">没有提问。</p>'
        color = _SESSION_COLORS[i % len(_SESSION_COLORS)]
        cols.append(
            f'<div class="topic"><h3><span style="color:{color}">●</span> {_e(_session_name(r))}</h3>'
            f"{items}</div>"
        )
    return f'<div class="topics">{"".join(cols)}</div>'


def render_comparison(reports: Sequence[SessionReport]) -> str:
    """Several sessions side by side on an elapsed-time axis (this week vs last week)."""
    if len(reports) < 2:
        raise ValueError("a comparison needs at least two sessions")
    names = " vs ".join(_session_name(r) for r in reports)
    header = (
        '<header class="top"><h1>直播对比报告</h1>'
        f'<div class="sub">{_e(names)}</div>'
        '<nav class="toc"><a href="#cmp-overview">核心指标</a><a href="#cmp-timeline">每分钟对比</a>'
        '<a href="#cmp-topics">疑问按话题</a><a href="#cmp-questions">高频问题</a></nav></header>'
    )
    sessions = "".join(
        f"<li>{_e(_session_name(r))}: 会话 {_e(r.session_id)}, "
        f"{format_datetime(r.start_ts)}–{format_clock(r.end_ts)}"
        f", {_e(_duration(r.headline.duration_s))}</li>" for r in reports
    )
    body = "\n".join([
        header,
        f'<section id="cmp-overview"><h2>核心指标</h2><p class="note">第一列为基准; '
        f"变化列红色为变差、绿色为变好。</p>{_comparison_table(reports)}"
        f'<ul class="muted">{sessions}</ul></section>',
        '<section id="cmp-timeline"><h2>每分钟对比</h2>'
        '<p class="note">横轴为开播后的分钟数, 各场对齐开播时刻。</p>'
        f'{_json_script("fig-compare", _comparison_figure(reports))}</section>',
        '<section id="cmp-topics"><h2>疑问按话题</h2><p class="note">各话题提问占该场已分析弹幕的比例。</p>'
        f'{_json_script("fig-topics", _topic_figure(reports))}</section>',
        f'<section id="cmp-questions"><h2>高频问题</h2>{_comparison_questions(reports)}</section>',
    ])
    return _page(f"直播对比 · {names}", body)


# -- CSV ----------------------------------------------------------------------------------------------


_SAFE_NAME = re.compile(r"[^\w.-]+")

MINUTE_COLUMNS: tuple[str, ...] = (
    "分钟", "开始时间", "弹幕", "已分析", "正面", "中性", "负面", "负面占比", "疑问", "疑问率",
    *(f"疑问_{label}" for label in TOPIC_LABELS.values()),
    "购买意向", "不信任", "点赞", "礼物", "礼物金额(元)", "进房", "关注", "分享", "在线人数", "活跃观众",
    "未分析",
)
OUTCOME_MINUTE_COLUMNS: tuple[str, ...] = ("新观众", "在场观众", "互动人数", "互动率", "意向弹幕")
"""Appended when the report carries the outcome analytics (`livebot report` and replay reports do)."""
QUESTION_COLUMNS: tuple[str, ...] = (
    "话题", "代表问题", "次数", "高峰时间", "高峰分钟次数", "首次", "最后", "问法数", "常见数值",
    "原话1", "原话2", "原话3",
)
SUGGESTION_COLUMNS: tuple[str, ...] = (
    "时间", "类型", "建议", "理由", "状态", "段落", "话题", "置信度", "处理用时(秒)",
)


def _minute_row(m: MinuteRow) -> list[object]:
    share = round(m.neg_share, 4) if m.analyzed else ""
    rate = round(m.confusion_rate, 4) if m.analyzed else ""
    return [
        m.index + 1, format_datetime(m.start_ts), m.comments, m.analyzed, m.pos, m.neu, m.neg, share,
        m.confused, rate, *(m.confused_by_topic.get(t, 0) for t in TOPIC_LABELS), m.buying_intent,
        m.distrust, m.likes, m.gifts, m.gift_value, m.enters, m.follows, m.shares,
        "" if m.online is None else m.online, m.active_viewers, m.unanalyzed,
    ]


def write_csv(report: SessionReport, directory: str | Path) -> list[Path]:
    """Write `<session>-minutes.csv`, `<session>-questions.csv` (and `-suggestions.csv` when there are any).

    UTF-8 with BOM so Excel opens the Chinese headers and comments correctly.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    stem = _SAFE_NAME.sub("_", report.session_id)
    paths = []

    def write(name: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
        path = out / f"{stem}-{name}.csv"
        with path.open("w", encoding="utf-8-sig", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        paths.append(path)

    outcome = report.outcome
    if outcome is None:
        write("minutes", MINUTE_COLUMNS, (_minute_row(m) for m in report.minutes))
    else:
        write("minutes", MINUTE_COLUMNS + OUTCOME_MINUTE_COLUMNS, (
            _minute_row(m) + [new, present, acting, "" if not present else round(acting / present, 4), intent]
            for m, (new, present, acting, intent) in zip(report.minutes, outcome.minutes, strict=True)
        ))
    write("questions", QUESTION_COLUMNS, (
        [topic_label(q.topic), q.label, q.count, format_datetime(q.peak_ts), q.peak_count,
         format_datetime(q.first_ts, seconds=True), format_datetime(q.last_ts, seconds=True), q.variants,
         "、".join(f"{v}×{c}" for v, c in q.quantities), *(list(q.examples) + ["", "", ""])[:3]]
        for q in report.questions[:CSV_QUESTIONS]
    ))
    if report.suggestions:
        write("suggestions", SUGGESTION_COLUMNS, (
            [format_datetime(int(s["created_ts"]), seconds=True),
             KIND_LABELS.get(str(s.get("kind")), s.get("kind")), s.get("text", ""), s.get("reason", ""),
             STATE_LABELS.get(str(s.get("state")), s.get("state")), s.get("segment") or "",
             topic_label(str(s["topic"])) if s.get("topic") else "", s.get("confidence", ""),
             "" if (t := time_to_decide_s(s)) is None else round(t, 1)]
            for s in report.suggestions
        ))
    return paths


# -- entry point --------------------------------------------------------------------------------------


def write_reports(
    sources: Sequence[tuple[Store, str]], out: str | Path | None, *, csv_dir: str | Path | None = None,
    targets: Targets | None = None, analytics: AnalyticsSettings | None = None,
) -> list[SessionReport]:
    """Build the reports of `(store, session_id)` pairs; write one HTML (a comparison for several) and CSVs.

    With `analytics`, each report also gets the outcome analytics (bot.analytics_trend): funnel, returning
    viewers, need match, before/after of accepted suggestions, benchmark rooms, coverage; a comparison adds
    their headline figures as rows and the CSV their per-minute funnel.

    Raises:
        KeyError: a session is not in its store.
    """
    if analytics is not None:
        reports = [_with_analytics(store, sid, targets, analytics) for store, sid in sources]
    else:
        reports = [build_session_report(store, sid, targets=targets) for store, sid in sources]
    if out is not None:
        page = render_report(reports[0]) if len(reports) == 1 else render_comparison(reports)
        path = Path(out)
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    if csv_dir is not None:
        for r in reports:
            write_csv(r, csv_dir)
    return reports


def _with_analytics(
    store: Store, session_id: str, targets: Targets | None, settings: AnalyticsSettings
) -> SessionReport:
    from bot.analytics_trend import report_analytics

    ride = report_analytics(store, session_id, settings)
    if ride is None:
        return build_session_report(store, session_id, targets=targets)
    observer, finish = ride
    return finish(build_session_report(store, session_id, targets=targets, observers=[observer.add]))
