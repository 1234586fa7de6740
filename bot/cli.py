"""`livebot` command line. A LivebotError prints one line and exits 2; anything else is a bug."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bot import __version__
from bot.config import Config, load_config
from bot.errors import LivebotError
from nlp.train_args import add_train_arguments

log = logging.getLogger("livebot")

Handler = Callable[[argparse.Namespace], int]


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("jieba").setLevel(logging.WARNING)
    if verbose < 2:
        # Per-tick job lines and per-request access lines drown the status line.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


# -- run --------------------------------------------------------------------------------------------


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a room number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive room number, got {n}")
    return n


def live_room_config(
    cfg: Config,
    *,
    bilibili: int | None = None,
    cookie_file: str | None = None,
    douyin: str | None = None,
    douyin_room: str | None = None,
) -> Config:
    """`run --bilibili/--douyin`: the loaded config with its rooms replaced by one live room.

    Both shortcuts together make one merged room named `live`. The room keeps the first configured
    room's run-sheet; every other section stays as loaded.
    """
    from bot.config import parse_config

    if cookie_file and bilibili is None:
        raise LivebotError("--bilibili-cookie-file needs --bilibili ROOMID")
    if douyin_room and douyin is None:
        raise LivebotError("--douyin-room needs --douyin")
    sources: list[dict[str, Any]] = []
    if bilibili is not None:
        sources.append({"kind": "bilibili", "room_id": bilibili, "cookie_file": cookie_file or ""})
    if douyin is not None:
        sources.append({"kind": "douyin", "url": douyin, "douyin_room": douyin_room or ""})
    if not sources:
        return cfg
    if len(sources) == 2:
        name = "live"
    elif bilibili is not None:
        name = f"bilibili-{bilibili}"
    else:
        name = f"douyin-{douyin_room}" if douyin_room else "douyin"
    data = cfg.model_dump()
    data["rooms"] = [{"name": name, "script": cfg.rooms[0].script, "sources": sources}]
    return parse_config(data, file="command line")


def cmd_run(args: argparse.Namespace) -> int:
    from bot.app import App

    cfg = live_room_config(
        _config(args), bilibili=args.bilibili, cookie_file=args.bilibili_cookie_file, douyin=args.douyin,
        douyin_room=args.douyin_room,
    )
    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)

    resumed = resume_sessions(cfg, args.session or [], latest=args.resume)

    async def main() -> None:
        app = App(cfg, bus_url=args.bus, bus_role=args.role)
        app.pipeline.session_ids.update(resumed)
        restored = {room: app.restore_session(room, sid) for room, sid in resumed.items()}
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, app.request_stop)
        rooms = ", ".join(f"{r.name} ({'+'.join(s.kind for s in r.sources)})" for r in cfg.rooms)
        print(f"livebot {__version__} 已启动 · 直播间: {rooms} · 数据: {cfg.store_path} · Ctrl+C 退出", file=sys.stderr)
        for room, sid in sorted(resumed.items()):
            print(f"  [{room}] 继续会话 {sid} (已恢复 {restored[room]} 条事件)", file=sys.stderr)
        await app.run(duration_s=args.duration)
        stats = app.pipeline.stats
        print(
            f"已停止: 收到 {stats.received} 条事件, 分析 {stats.analyzed}, 存储 {stats.stored}, "
            f"重复丢弃 {stats.duplicates}, 降级未分析 {stats.shed + stats.sampled_out}"
            + (f", 快速分类 {stats.fallback}" if stats.fallback else ""),
            file=sys.stderr,
        )
        for room, sid in sorted(app.pipeline.sessions.items()):
            print(f"  [{room}] 会话 {sid}", file=sys.stderr)
        if app.bus_url:
            bus = app.bus.status()
            print(f"  总线 {app.bus_role}: 发布 {bus.get('published', 0)}, 读取 {bus.get('consumed', 0)}, "
                  f"确认 {bus.get('acked', 0)}, 接管认领 {bus.get('claimed', 0)}", file=sys.stderr)
        if app.ingest is not None and app.ingest.unmatched:
            keys = ", ".join(f"{k} ×{n}" for k, n in app.ingest.unmatched.most_common(5))
            print(f"  推送接入中没有直播间认领的事件: {keys}", file=sys.stderr)
            print("  (在 generic 来源的 match 中添加)", file=sys.stderr)

    asyncio.run(main())
    return 0


def resume_sessions(cfg: Config, ids: Sequence[str], *, latest: bool = False) -> dict[str, str]:
    """Room → stored session to continue: each `--session ID` (its room is the id's `-<room>` suffix, or
    the only room) and, with `--resume`, every other room's latest session in the store."""
    rooms = [r.name for r in cfg.rooms]
    chosen: dict[str, str] = {}
    for sid in ids:
        matches = [r for r in rooms if sid.endswith(f"-{r}")] or (rooms if len(rooms) == 1 else [])
        if not matches:
            raise LivebotError(f"--session {sid!r} names no configured room (session ids end in -<room>; "
                               f"rooms: {', '.join(rooms)})")
        room = max(matches, key=len)
        if room in chosen:
            raise LivebotError(f"two --session ids for room {room}: {chosen[room]} and {sid}")
        chosen[room] = sid
    if latest:
        if not cfg.store.enabled:
            raise LivebotError("--resume continues stored sessions: it needs [store] enabled = true")
        if cfg.store_path.is_file():
            from bot.outputs.store import Store

            with Store.open(cfg.store_path) as store:
                for room in rooms:
                    stored = store.sessions(room)
                    if stored and room not in chosen:
                        chosen[room] = stored[-1].id
    return chosen


# -- record -----------------------------------------------------------------------------------------


def _record_source(args: argparse.Namespace, cfg: Config) -> Any:
    """The one live source `livebot record` connects to, from its options."""
    from bot.app import make_hasher, read_cookie_file
    from bot.clock import SystemClock

    clock = SystemClock()
    store_names = cfg.privacy.store_names
    if args.api_base and args.platform != "bilibili":
        raise LivebotError("--api-base applies to --platform bilibili only")
    if args.cookie_file and args.platform != "bilibili":
        raise LivebotError("--cookie-file applies to --platform bilibili only")
    if args.token and args.platform != "generic":
        raise LivebotError("--token applies to --platform generic only")
    hasher = make_hasher(cfg)
    if args.platform == "bilibili":
        from bot.sources.bilibili import DEFAULT_API_BASE, BilibiliSource

        if args.room is None:
            raise LivebotError("--platform bilibili needs --room ROOMID (live.bilibili.com/ROOMID)")
        try:
            room_id = _positive_int(args.room)
        except argparse.ArgumentTypeError as e:
            raise LivebotError(f"--room: {e}") from None
        cookie = read_cookie_file(args.cookie_file, key="--cookie-file") if args.cookie_file else None
        return BilibiliSource(
            room_id, hasher=hasher, clock=clock, api_base=args.api_base or DEFAULT_API_BASE,
            ws_url=args.ws_url, cookie=cookie, store_names=store_names,
        )
    if args.platform == "douyin":
        from bot.sources.douyin_push import DEFAULT_URL, DouyinPushSource

        # --room filters to one Douyin room and names it; without it every forwarded room is kept.
        return DouyinPushSource(
            hasher=hasher, room=args.room, url=args.ws_url or DEFAULT_URL, douyin_room=args.room, clock=clock,
            store_names=store_names,
        )
    from bot.sources.generic_ws import GenericWsClient

    if not args.ws_url:
        raise LivebotError("--platform generic needs --ws-url, the server that pushes generic-JSON events")
    return GenericWsClient(
        args.ws_url, hasher=hasher, room=args.room, token=args.token, clock=clock, store_names=store_names,
    )


def cmd_record(args: argparse.Namespace) -> int:
    from bot.record import record

    cfg = _config(args)
    if args.ws_url and not args.ws_url.startswith(("ws://", "wss://")):
        raise LivebotError(f"--ws-url must start with ws:// or wss://, got {args.ws_url!r}")
    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    source = _record_source(args, cfg)
    out = Path(args.out)

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Not available off the main thread or on Windows; Ctrl+C then raises, and the file is
            # still flushed and closed on the way out.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        until = f", {args.duration:g} 秒后结束" if args.duration else ""
        print(f"开始录制 {source.status.name} → {out}{until} · Ctrl+C 结束", file=sys.stderr, flush=True)
        return await record(source, out, duration_s=args.duration, stop=stop, append=args.append)

    result = asyncio.run(main())
    print(result.summary())
    return 0


# -- replay -----------------------------------------------------------------------------------------


def _parse_speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed must be 'max' or a number, got {value!r}") from None
    if speed <= 0:
        raise argparse.ArgumentTypeError("--speed must be positive")
    return speed


def cmd_replay(args: argparse.Namespace) -> int:
    from bot.app import replay_file
    from bot.outputs.store import Store

    cfg = _config(args)
    path = Path(args.log)
    if not path.is_file():
        raise LivebotError(f"replay log not found: {path}")
    store_path = Path(args.out) / "livebot.db" if args.out else cfg.store_path
    store = Store.open(store_path) if (cfg.store.enabled or args.out) else None
    report_tmp = None
    if store is None and (args.report or args.csv):
        # The report reads the stored session: with the store disabled, replay into a throwaway one.
        report_tmp = tempfile.TemporaryDirectory(prefix="livebot-report-")
        store = Store.open(Path(report_tmp.name) / "livebot.db")
    report_lines: list[str] = []
    try:
        result = asyncio.run(
            replay_file(path, cfg, speed=args.speed, room=args.room, store=store, progress=not args.quiet,
                        script=args.script)
        )
        if store is not None and (args.report or args.csv):
            if result.session_id is None:
                raise LivebotError(f"nothing to report: {path} has no events")
            report_lines = _write_report(cfg, [(store, result.session_id)], args.report, args.csv)
    finally:
        if store is not None:
            store.close()
        if report_tmp is not None:
            report_tmp.cleanup()
            store = None
    if args.suggestions_out:
        _write_suggestions(Path(args.suggestions_out), result.suggestions)
    print(format_replay_summary(result, store_path if store is not None else None))
    if args.suggestions_out:
        print(f"  建议已写入 {args.suggestions_out}")
    for line in report_lines:
        print(line)
    return 0


# -- report -----------------------------------------------------------------------------------------


def _write_report(
    cfg: Config, sources: Sequence[tuple[Any, str]], out: str | None, csv_dir: str | None
) -> list[str]:
    """Write the HTML report (a comparison for several sessions) and CSVs; return lines to print."""
    from bot.analytics_trend import AnalyticsSettings
    from bot.outputs.report import write_reports
    from bot.outputs.report_data import Targets

    try:
        write_reports(sources, out, csv_dir=csv_dir, targets=Targets.from_config(cfg),
                      analytics=AnalyticsSettings.from_config(cfg))
    except OSError as e:
        raise LivebotError(f"cannot write the report: {e.strerror or e} ({e.filename})") from None
    lines = []
    if out:
        kind = "报告" if len(sources) == 1 else f"对比报告 ({len(sources)} 场)"
        lines.append(f"  {kind}已写入 {out} ({Path(out).stat().st_size / 1e6:.1f} MB)")
    if csv_dir:
        lines.append(f"  CSV 已写入 {csv_dir}/ (每分钟数据、问题表; UTF-8 带 BOM)")
    return lines


def cmd_report(args: argparse.Namespace) -> int:
    from bot.app import replay_file
    from bot.outputs.store import Store

    cfg = _config(args)
    if args.trend or args.last is not None:
        return _cmd_trend(args, cfg)
    if not args.sessions:
        raise LivebotError("report needs SESSION_ID|LOG… (or --trend --last N)")
    if not args.out and not args.csv:
        raise LivebotError("report needs --out FILE.html and/or --csv DIR")
    with contextlib.ExitStack() as stack:
        sources: list[tuple[Store, str]] = []
        db_store: Store | None = None
        db = Path(args.db) if args.db else cfg.store_path
        for item in args.sessions:
            log_path = Path(item)
            if log_path.is_file():
                # A log is replayed into a throwaway store first (closed before its directory goes).
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="livebot-report-"))
                store = Store.open(Path(tmp) / "livebot.db")
                stack.callback(store.close)
                result = asyncio.run(
                    replay_file(log_path, cfg, room=args.room, store=store, progress=not args.quiet)
                )
                if result.session_id is None:
                    raise LivebotError(f"nothing to report: {log_path} has no events")
                print(f"回放 {log_path} → 会话 {result.session_id}", file=sys.stderr)
                sources.append((store, result.session_id))
                continue
            if db_store is None:
                if not db.is_file():
                    raise LivebotError(f"{item!r} is neither a log file nor a session: store {db} not found "
                                       "(use --db FILE)")
                db_store = Store.open(db)
                stack.callback(db_store.close)
            if db_store.session(item) is None:
                recent = ", ".join(s.id for s in db_store.sessions()[-5:])
                raise LivebotError(f"{item!r} is neither a log file nor a session in {db}"
                                   + (f" (recent sessions: {recent})" if recent else ""))
            sources.append((db_store, item))
        for line in _write_report(cfg, sources, args.out, args.csv):
            print(line.strip())
    return 0


def _cmd_trend(args: argparse.Namespace, cfg: Config) -> int:
    """`livebot report --trend SESSION…|--last N --out trend.html`: one page over many stored sessions."""
    from bot.analytics_trend import AnalyticsSettings, last_sessions, write_trend
    from bot.outputs.store import Store

    if not args.out:
        raise LivebotError("report --trend needs --out FILE.html")
    if args.last is not None and args.last < 1:
        raise LivebotError(f"--last must be at least 1, got {args.last}")
    if args.csv:
        raise LivebotError("report --trend writes HTML only (drop --csv)")
    db = Path(args.db) if args.db else cfg.store_path
    if not db.is_file():
        raise LivebotError(f"store {db} not found (use --db FILE)")
    settings = AnalyticsSettings.from_config(cfg)
    with Store.open(db) as store:
        ids: list[str] = []
        for item in args.sessions:
            if store.session(item) is None:
                hint = (" (--trend reads stored sessions; replay a log into a store first: "
                        "livebot replay LOG --out DIR)") if Path(item).is_file() else ""
                raise LivebotError(f"{item!r} is not a session in {db}{hint}")
            ids.append(item)
        if args.last is not None:
            ids += last_sessions(store, args.last, args.room, settings)
        ids = list(dict.fromkeys(ids))
        if not ids:
            room = f" for room {args.room!r}" if args.room else ""
            raise LivebotError(f"no sessions to show: {db} has none{room}")
        try:
            rows = write_trend(store, ids, args.out, settings)
        except OSError as e:
            raise LivebotError(f"cannot write the trend page: {e.strerror or e} ({e.filename})") from None
    print(f"趋势页已写入 {args.out} ({len(rows)} 场)")
    for r in rows:
        score = "—" if r.score is None else f"{r.score:.1f}"
        print(f"  {r.session_id}  评分 {score}")
    return 0


def _write_suggestions(path: Path, suggestions: Sequence[Any]) -> None:
    from bot.dispatcher import suggestion_line

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for s in suggestions:
                f.write(suggestion_line(s) + "\n")
    except OSError as e:
        raise LivebotError(f"cannot write {path}: {e.strerror or e}") from None


_KIND_ZH = {
    "script_switch": "切换话术", "coupon": "发券", "prompt": "互动口令", "alert": "告警",
    "answer_card": "答疑卡",
}


def format_advisor_summary(result: Any) -> list[str]:
    """Suggestion counts and achieved vs target (prompts/min, coupon intervals, promotional pushes/min)."""
    counts: dict[str, int] = {}
    for s in getattr(result, "suggestions", []):
        counts[str(s.kind)] = counts.get(str(s.kind), 0) + 1
    stats = getattr(result, "advisor_stats", {}) or {}
    if not counts and not stats:
        return []
    review = sum(1 for s in result.suggestions if s.needs_review)
    lines = [
        "  建议: " + " · ".join(f"{zh} {counts.get(k, 0)}" for k, zh in _KIND_ZH.items())
        + (f" (其中 {review} 条需人工复核)" if review else "")
    ]
    for room, st in stats.items():
        p, c = st["prompts"], st["coupons"]
        lo, hi = p["range_per_min"]
        mean = p["mean_responses"]
        lines.append(
            f"  [{room}] 互动口令 {p['achieved_per_min']:.1f} 次/分 "
            f"(目标 {p['target_per_min']:g}, 区间 {lo:g}–{hi:g})"
            + (f", 平均每次回应 {mean:g} 条" if mean is not None else "")
        )
        gaps = c["intervals_s"]
        gap_text = f", 间隔 {min(gaps)}–{max(gaps)} 秒" if gaps else ""
        lines.append(
            f"  [{room}] 发券 {c['drops']} 次 (预算 {c['budget']}, 每小时上限 {c['per_hour']}){gap_text}; "
            f"推广每分钟最多 {st['promo_pushes_max_per_min']} 次 (上限 {st['promo_cap_per_min']})"
        )
    return lines


def format_replay_summary(result: Any, store_path: Path | None) -> str:
    from bot.sources.replay import SKIP_LABELS
    from nlp.topics import TOPIC_LABELS

    st = result.state
    tot = st.totals
    stats = result.stats
    analyzed = tot.analyzed or 1
    lines = [
        f"回放: {stats.path} ({stats.format}, {stats.encoding})",
        f"  读取 {stats.lines_read} 行, 事件 {stats.events}, 跳过 {sum(stats.skipped.values())}"
        + (f" ({', '.join(f'{SKIP_LABELS.get(k, k)} {v}' for k, v in stats.skipped.items())})"
           if stats.skipped else ""),
    ]
    # Where to look: the first skipped lines by number (the warning log names up to 20).
    lines.extend(
        f"    第 {ex.line} 行 {SKIP_LABELS.get(ex.reason, ex.reason)}: {ex.detail[:80]}"
        for ex in stats.examples[:3]
    )
    if tot.first_ms is not None and tot.last_ms is not None:
        minutes = max(1e-9, (tot.last_ms - tot.first_ms) / 60000)
        lines.append(f"  时长 {minutes:.1f} 分钟, 弹幕 {tot.comments} 条 ({tot.comments / minutes:.1f}/分)")
    s = tot.sentiment
    lines.append(
        f"  情绪: 正面 {s['pos'] / analyzed:.1%} · 中性 {s['neu'] / analyzed:.1%} · 负面 {s['neg'] / analyzed:.1%}"
    )
    lines.append(f"  疑问率 {tot.confused / analyzed:.1%} ({tot.confused} 条), 购买意向 {tot.buying_intent} 条")
    if tot.topic_confused:
        lines.append(
            "  疑问按话题: "
            + ", ".join(f"{TOPIC_LABELS.get(k, k)} {v}" for k, v in tot.topic_confused.most_common(6))
        )
    groups = st.questions(10**6, limit=8)
    if groups:
        lines.append("  高频问题 (最近 5 分钟内, 近似合并):")
        lines.extend(
            f"    [{TOPIC_LABELS.get(g.topic, g.topic)}] ×{g.count}: {' / '.join(g.examples)}" for g in groups
        )
    lines.extend(format_advisor_summary(result))
    if result.session_id and store_path is not None:
        lines.append(f"  会话 {result.session_id} 已存入 {store_path}")
    return "\n".join(lines)


# -- scripts ----------------------------------------------------------------------------------------


def cmd_scripts_check(args: argparse.Namespace) -> int:
    """Errors fail the check (exit 2); warnings (offers, compliance, platforms) are printed and pass."""
    from bot.advisors.engine import check_limits
    from bot.scripts import check_dir

    bad = warned = 0
    results = check_dir(args.path, limits=check_limits(_config(args).advisors))
    if not results:
        raise LivebotError(f"no run-sheets (*.yaml, *.yml) in {args.path}")
    for r in results:
        if r.error is not None:
            bad += 1
            print(f"错误 {r.error}")
        elif r.sheet is not None:
            sheet = r.sheet
            prompts = sum(len(p.prompts) for p in sheet.prompt_pools)
            note = f", {len(r.warnings)} 条警告" if r.warnings else ""
            print(f"通过 {r.path}: {sheet.show.name} ({sheet.show.category}, {len(sheet.segments)} 个段落, "
                  f"{prompts} 条互动口令{note})")
            for w in r.warnings:
                print(f"警告 {w}")
            warned += len(r.warnings)
    if warned:
        print(f"{warned} 条警告 (不影响通过, 开播前请核对)", file=sys.stderr)
    if bad:
        print(f"{bad}/{len(results)} 个话术脚本有错误", file=sys.stderr)
        return 2
    return 0


# -- classify / eval --------------------------------------------------------------------------------


def _make_classifier(name: str, cfg: Config | None = None) -> Any:
    from nlp.classifiers import make_classifier

    if name == "transformer" and cfg is not None:
        c = cfg.classifier
        return make_classifier(name, model=c.model or None, allow_hub=c.allow_hub, threads=c.threads)
    return make_classifier(name)


def cmd_classify(args: argparse.Namespace) -> int:
    from nlp.analyzer import Analyzer

    cfg = _config(args)
    analyzer = Analyzer(_make_classifier(args.classifier or cfg.classifier.name, cfg))
    texts = list(args.text) or [line.rstrip("\n") for line in sys.stdin]
    for text, a in zip(texts, analyzer.analyze(texts), strict=True):
        if args.json:
            print(json.dumps({"text": text, **_analysis_dict(a)}, ensure_ascii=False))
            continue
        p = a.sentiment_probs
        print(
            f"{text}\t{a.sentiment} (neg {p[0]:.2f} neu {p[1]:.2f} pos {p[2]:.2f})"
            f"\tconfusion={'yes' if a.confusion else 'no'} ({a.confusion_score:.2f})"
            f"\ttopics={','.join(a.topics)}" + ("\tasks_host" if a.asks_host else "")
            + ("\tbuying_intent" if a.buying_intent else "")
        )
    return 0


def _analysis_dict(a: Any) -> dict[str, Any]:
    return {
        "sentiment": a.sentiment,
        "sentiment_probs": [round(x, 4) for x in a.sentiment_probs],
        "confusion": a.confusion,
        "confusion_score": round(a.confusion_score, 4),
        "topics": list(a.topics),
        "keywords": list(a.keywords),
        "asks_host": a.asks_host,
        "buying_intent": a.buying_intent,
        "confidence": round(a.confidence, 4),
    }


def cmd_eval(args: argparse.Namespace) -> int:
    from nlp.evaluate import evaluate, format_table

    cfg = _config(args)
    names = args.classifier or [cfg.classifier.name]
    results = []
    for f in args.files:
        p = Path(f)
        if not p.is_file():
            raise LivebotError(f"eval file not found: {p}")
        for name in names:
            r = evaluate(p, _make_classifier(name, cfg))
            r["file"] = p.name
            results.append(r)
    if args.json:
        out: Any = results[0] if len(results) == 1 else results
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(format_table(results))
    return 0


# -- bench ------------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from bot.bench import run_bench

    options: dict[str, Any] = {}
    if args.classifier:
        options["classifier"] = args.classifier
    if args.comments:
        options["n"] = args.comments
    for name in ("minutes", "rooms", "rate", "seconds"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    result = run_bench(args.scenario, **options)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        width = max(len(k) for k in result)
        for k, v in result.items():
            print(f"{k:<{width}}  {v}")
    return 0


# -- parser -----------------------------------------------------------------------------------------


# -- alerts -----------------------------------------------------------------------------------------


def cmd_alerts_test(args: argparse.Namespace) -> int:
    from bot.outputs.alerts import send_test

    cfg = _config(args)
    robots = cfg.alerts.robots
    if not robots:
        raise LivebotError("no chat robots configured: add [[alerts.robots]] to the config file")
    results = asyncio.run(
        send_test(robots, screen_url=cfg.alerts.screen_url, timezone=cfg.alerts.timezone,
                  timeout_s=cfg.alerts.request_timeout_s)
    )
    width = max(len(name) for name, _, _ in results)
    for name, ok, detail in results:
        print(f"{name:<{width}}  {'成功' if ok else '失败'}  {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


def _alerts_help(args: argparse.Namespace) -> int:
    print("usage: livebot alerts test [--config FILE]", file=sys.stderr)
    return 2


def _scripts_help(args: argparse.Namespace) -> int:
    print("usage: livebot scripts check DIR|FILE", file=sys.stderr)
    return 2


def cmd_train(args: argparse.Namespace) -> int:
    if args.data is not None and not args.data.is_dir():
        raise LivebotError(f"--data {args.data}: no such directory (it holds reviews_train.tsv and "
                           "livechat_train.tsv, e.g. ../shared/data/train)")
    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)  # progress: one line per 200 steps and per epoch
    from nlp.train import run_from_args

    try:
        return run_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        raise LivebotError(f"train: {e}") from e


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livebot",
        description="直播场控助手: reads live comments, understands them, and tells the room what to do next.",
    )
    parser.add_argument("--version", action="version", version=f"livebot {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = add("run", cmd_run, "run the service (default config: simulated room + SQLite store)")
    p.add_argument("--config", help="TOML config file (default: the embedded config/livebot.toml)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--bilibili", type=_positive_int, metavar="ROOMID",
                   help="run one live Bilibili room (the number in live.bilibili.com/ROOMID) instead of the "
                        "configured rooms; other settings come from the config")
    p.add_argument("--bilibili-cookie-file", metavar="FILE",
                   help="file with a logged-in browser's Cookie header for --bilibili (chmod 600)")
    p.add_argument("--douyin", nargs="?", const="ws://127.0.0.1:8888/", metavar="URL",
                   help="run one Douyin room through DouyinBarrageGrab's push socket (default "
                        "ws://127.0.0.1:8888/); with --bilibili: one merged room")
    p.add_argument("--douyin-room", metavar="ID",
                   help="with --douyin: keep only this Douyin room (web room id or the anchor's 抖音号)")
    p.add_argument("--session", action="append", metavar="ID",
                   help="continue this stored session (the id ends in -<room>) after a restart; repeat for "
                        "several rooms")
    p.add_argument("--resume", action="store_true", help="continue each room's latest stored session")
    p.add_argument("--bus", metavar="URL",
                   help="redis://HOST:PORT[/DB]: sources publish events to Redis Streams and workers analyse "
                        "the rooms they own, across processes and machines (pip install 'livebot[redis]'); "
                        "default: bus.url of the config (\"\" = the in-process queue)")
    p.add_argument("--role", choices=("all", "sources", "worker"), default=None,
                   help="with a shared bus: all = run the sources and analyse; sources = publish only; "
                        "worker = analyse the rooms on the bus, run no sources (default: bus.role, all)")

    p = add("record", cmd_record, "connect to one live room and write its events as a replay JSONL log")
    p.add_argument("--platform", required=True, choices=("bilibili", "douyin", "generic"))
    p.add_argument("--room", metavar="ID",
                   help="bilibili: room number (required); douyin: keep only this room (web room id or "
                        "抖音号; default: every forwarded room); generic: room key written for every event")
    p.add_argument("--out", required=True, metavar="LOG.jsonl",
                   help="file to write (must not exist, see --append)")
    p.add_argument("--append", action="store_true", help="append to an existing log")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: at Ctrl+C)")
    p.add_argument("--ws-url", metavar="URL",
                   help="websocket to connect to. bilibili: danmaku server or relay (default: from the "
                        "bootstrap); douyin: BarrageGrab (default ws://127.0.0.1:8888/); generic: the "
                        "pushing server (required)")
    p.add_argument("--api-base", metavar="URL",
                   help="bilibili: live API base for the bootstrap (a proxy or test server)")
    p.add_argument("--cookie-file", metavar="FILE",
                   help="bilibili: file with a logged-in browser's Cookie header (chmod 600)")
    p.add_argument("--token", help="generic: bearer token sent to the server")
    p.add_argument("--config", help="TOML config file (data_dir for the viewer-id salt, privacy.store_names)")

    p = add("replay", cmd_replay, "run a saved comment log through the pipeline and store it")
    p.add_argument("log", help="JSONL, CSV, Bilibili danmaku XML or plain-text log")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--out", help="directory for the store of this replay (default: the config's store)")
    p.add_argument("--speed", type=_parse_speed, default=None, metavar="max|N",
                   help="max (default) = as fast as possible; N = N× real time")
    p.add_argument("--room", help="room name (default: from the log, or the file name)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--script", help="run-sheet for the advisors: a scripts_library name or a YAML file "
                                    "(default: the room's, else [advisors] script)")
    p.add_argument("--suggestions-out", metavar="FILE.jsonl",
                   help="write every suggestion as one JSON line (ts in event-time ms, kind, segment/topic, "
                        "text, reason, confidence)")
    p.add_argument("--report", metavar="FILE.html", help="write this replay's HTML report (self-contained)")
    p.add_argument("--csv", metavar="DIR", help="write the per-minute series and question table as CSV")

    p = add("report", cmd_report, "HTML report of stored sessions or logs; two or more: side by side")
    p.add_argument("sessions", nargs="*", metavar="SESSION_ID|LOG",
                   help="session id in the store, or a log file (replayed into a temporary store first)")
    p.add_argument("--trend", action="store_true",
                   help="one trend page over stored sessions: a 0–10 score, new/returning viewers, funnel, "
                        "need match and buying intent per session")
    p.add_argument("--last", type=int, metavar="N",
                   help="--trend over the last N stored sessions (with --room: that room's); implies --trend")
    p.add_argument("--out", metavar="FILE.html", help="HTML file to write (several sessions: a comparison)")
    p.add_argument("--csv", metavar="DIR", help="also write per-minute series and question tables as CSV")
    p.add_argument("--db", metavar="FILE", help="store holding the session ids (default: the config's store)")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--room", help="room name for log files (default: from the log, or the file name)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar while replaying logs")

    p = add("scripts", _scripts_help, "run-sheets (scripts_library format): check")
    scripts = p.add_subparsers(dest="scripts_command", metavar="SUBCOMMAND")
    check = scripts.add_parser(
        "check", help="validate every run-sheet in DIR (or one FILE)",
        description="validate run-sheets: one line per file plus one per warning (offer depth and "
                    "concurrency, coupon budget vs cadence, compliance terms, unknown platforms); "
                    "exit code 2 if any is invalid, warnings alone pass",
    )
    check.add_argument("path", metavar="DIR|FILE")
    check.add_argument("--config", help="TOML config file ([advisors.checks] thresholds, coupon defaults)")
    check.set_defaults(handler=cmd_scripts_check)

    p = add("alerts", _alerts_help, "chat robots for field-control alerts: test")
    alerts = p.add_subparsers(dest="alerts_command", metavar="SUBCOMMAND")
    test = alerts.add_parser(
        "test", help="send one test message to each configured robot and print each result",
        description="send one test message to each configured robot; exit 1 if any failed",
    )
    test.add_argument("--config", help="TOML config file")
    test.set_defaults(handler=cmd_alerts_test)

    p = add("classify", cmd_classify, "classify comments: sentiment, confusion, topics (stdin if no TEXT)")
    p.add_argument("text", nargs="*", metavar="TEXT")
    p.add_argument("--classifier", choices=("rules", "snownlp", "transformer"))
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = add("eval", cmd_eval,
            "measure a classifier on labelled TSV files (text, sentiment, confusion, intent)")
    p.add_argument("files", nargs="+", metavar="FILE.tsv")
    p.add_argument("--classifier", action="append", choices=("rules", "snownlp", "transformer"),
                   help="classifier to evaluate (repeatable; default: the configured one)")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--json", action="store_true", help="print JSON (one object for one file and classifier)")

    p = add("train", cmd_train,
            "train the transformer classifier on CPU (deterministic under --seed; see the model card)")
    add_train_arguments(p)

    p = add("bench", cmd_bench, "measure throughput and latency on this machine")
    p.add_argument("--scenario", default="pipeline",
                   help="pipeline (default), decode, screen, load (10 rooms × 300 comments/s, 60 s, whole "
                        "service), soak (RSS drift over --minutes)")
    p.add_argument("--classifier", choices=("rules", "snownlp", "transformer"))
    p.add_argument("--comments", type=int, help="number of comments for throughput runs")
    p.add_argument("--minutes", type=float, help="soak: duration in minutes (default 30)")
    p.add_argument("--rooms", type=int, help="load/soak: number of rooms (default 10 / 3)")
    p.add_argument("--rate", type=float, help="load/soak: comments per second per room (default 300 / 100)")
    p.add_argument("--seconds", type=float, help="load: duration in seconds (default 60)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    try:
        return int(args.handler(args))
    except LivebotError as e:
        print(f"livebot: 错误: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
