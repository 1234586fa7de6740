"""SQLite store (WAL): sessions, events, analyses, suggestions, marks.

One file per data directory; schema version in ``PRAGMA user_version`` with forward migrations.
Viewer ids arrive already hashed (bot.privacy); nicknames only exist when privacy.store_names is on.
A Store object is used from one thread at a time (the pipeline's store thread, or a CLI command).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import SinkError
from bot.events import Event, EventKind

if TYPE_CHECKING:
    from bot.advisors.base import Suggestion
    from nlp.analyzer import Analysis

# Session ids and report times are shown in China Standard Time: the shows and their staff live there.
CST = timezone(timedelta(hours=8))

_MIGRATIONS: tuple[str, ...] = (
    # 1: sessions, events, analyses, suggestions
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        room TEXT NOT NULL,
        started_ts INTEGER NOT NULL,
        ended_ts INTEGER,
        source TEXT NOT NULL DEFAULT '',
        meta TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id),
        platform TEXT NOT NULL,
        room TEXT NOT NULL,
        kind TEXT NOT NULL,
        ts INTEGER NOT NULL,
        received_ts INTEGER NOT NULL,
        msg_id TEXT,
        user_id TEXT,
        user_name TEXT,
        text TEXT NOT NULL DEFAULT '',
        count INTEGER NOT NULL DEFAULT 1,
        value REAL NOT NULL DEFAULT 0,
        gift_name TEXT,
        stats TEXT,
        event TEXT
    );
    CREATE INDEX events_session_ts ON events(session_id, received_ts);
    CREATE INDEX events_msg ON events(session_id, msg_id) WHERE msg_id IS NOT NULL;
    CREATE INDEX events_user ON events(user_id) WHERE user_id IS NOT NULL;
    CREATE TABLE analyses (
        event_id INTEGER PRIMARY KEY REFERENCES events(id),
        sentiment TEXT NOT NULL,
        p_neg REAL NOT NULL, p_neu REAL NOT NULL, p_pos REAL NOT NULL,
        confusion INTEGER NOT NULL,
        confusion_score REAL NOT NULL,
        topics TEXT NOT NULL,
        keywords TEXT NOT NULL,
        asks_host INTEGER NOT NULL,
        buying_intent INTEGER NOT NULL,
        distrust INTEGER NOT NULL,
        confidence REAL NOT NULL,
        classifier TEXT NOT NULL
    );
    CREATE TABLE suggestions (
        id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        room TEXT NOT NULL,
        kind TEXT NOT NULL,
        created_ts INTEGER NOT NULL,
        expires_ts INTEGER NOT NULL,
        text TEXT NOT NULL,
        reason TEXT NOT NULL,
        examples TEXT NOT NULL,
        confidence REAL NOT NULL,
        needs_review INTEGER NOT NULL,
        severity TEXT NOT NULL,
        segment TEXT,
        topic TEXT,
        rule TEXT,
        state TEXT NOT NULL,
        state_ts INTEGER,
        data TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (session_id, id)
    );
    """,
    # 2: marks — what field control decided outside suggestions (opening checklist ticks, …)
    """
    CREATE TABLE marks (
        session_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        ts INTEGER NOT NULL,
        data TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (session_id, kind, key)
    );
    """,
    # 3: iter_events pages a session by id; without this each page scanned and sorted the session.
    """
    CREATE INDEX events_session_id ON events(session_id, id);
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)


def make_session_id(room: str, started_ts: int) -> str:
    """`YYYYMMDD-HHMMSS-<room>` in China Standard Time (DESIGN.md *Interfaces*)."""
    t = datetime.fromtimestamp(started_ts / 1000, tz=CST)
    return f"{t:%Y%m%d-%H%M%S}-{room}"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    room: str
    started_ts: int
    ended_ts: int | None
    source: str
    events: int
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredAnalysis:
    """An analysis as read back from the store (report and analytics input)."""

    sentiment: str
    sentiment_probs: tuple[float, float, float]
    confusion: bool
    confusion_score: float
    topics: tuple[str, ...]
    keywords: tuple[str, ...]
    asks_host: bool
    buying_intent: bool
    distrust: bool
    confidence: float
    classifier: str
    text: str = ""
    """The comment as received (the analysed, normalised text is not stored)."""


class Store:
    """The SQLite store. Open with `Store.open(path)`; close with `close()`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.Lock()
        row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        # Event ids are assigned here (single writer per data directory) so analyses can
        # reference their event inside one executemany batch.
        self._next_id = int(row[0]) + 1

    @classmethod
    def open(cls, path: str | Path) -> Store:
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(p, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            _migrate(conn)
        except sqlite3.DatabaseError as e:
            raise SinkError(f"cannot open store {p}: {e}") from None
        except OSError as e:
            raise SinkError(f"cannot create store directory for {p}: {e.strerror}") from None
        return cls(conn, p)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sessions ---------------------------------------------------------------------------------

    def start_session(
        self, room: str, started_ts: int, *, source: str = "", session_id: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> str:
        """Create (or resume, when the id exists) a session and return its id."""
        sid = session_id or make_session_id(room, started_ts)
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO sessions(id, room, started_ts, source, meta) VALUES (?,?,?,?,?)",
                (sid, room, started_ts, source, json.dumps(meta or {}, ensure_ascii=False)),
            )
            self._conn.execute("UPDATE sessions SET ended_ts = NULL WHERE id = ?", (sid,))
        return sid

    def end_session(self, session_id: str, ended_ts: int, meta: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._conn.execute("UPDATE sessions SET ended_ts = ? WHERE id = ?", (ended_ts, session_id))
            if meta:
                old = self._conn.execute("SELECT meta FROM sessions WHERE id=?", (session_id,)).fetchone()
                merged = {**json.loads(old[0] if old else "{}"), **meta}
                self._conn.execute(
                    "UPDATE sessions SET meta = ? WHERE id = ?",
                    (json.dumps(merged, ensure_ascii=False), session_id),
                )

    def sessions(self, room: str | None = None) -> list[SessionInfo]:
        q = (
            "SELECT s.id, s.room, s.started_ts, s.ended_ts, s.source, s.meta,"
            " (SELECT COUNT(*) FROM events e WHERE e.session_id = s.id) FROM sessions s"
        )
        args: tuple[Any, ...] = ()
        if room is not None:
            q += " WHERE s.room = ?"
            args = (room,)
        q += " ORDER BY s.started_ts"
        with self._lock:
            rows = self._conn.execute(q, args).fetchall()
        return [SessionInfo(r[0], r[1], r[2], r[3], r[4], r[6], json.loads(r[5])) for r in rows]

    def session(self, session_id: str) -> SessionInfo | None:
        return next((s for s in self.sessions() if s.id == session_id), None)

    # -- events -----------------------------------------------------------------------------------

    def write_batch(
        self, session_id: str, events: Sequence[Event], analyses: Sequence[Analysis | None]
    ) -> None:
        """Store events with their analyses (None = not analysed) in one transaction."""
        if len(events) != len(analyses):
            raise ValueError("events and analyses differ in length")
        if not events:
            return
        ev_rows = []
        an_rows = []
        with self._lock:
            eid = self._next_id
            for ev, an in zip(events, analyses, strict=True):
                ev_rows.append((
                    eid, session_id, ev.platform, ev.room, str(ev.kind), ev.ts, ev.received_ts, ev.msg_id,
                    ev.user_id, ev.user_name, ev.text, ev.count, ev.value, ev.gift_name,
                    json.dumps(dict(ev.stats)) if ev.stats is not None else None, ev.event,
                ))
                if an is not None:
                    p = an.sentiment_probs
                    an_rows.append((
                        eid, an.sentiment, p[0], p[1], p[2], int(an.confusion), an.confusion_score,
                        ",".join(an.topics), ",".join(an.keywords), int(an.asks_host),
                        int(an.buying_intent), int(an.distrust), an.confidence, an.classifier,
                    ))
                eid += 1
            try:
                self._conn.execute("BEGIN")
                self._conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", ev_rows)
                if an_rows:
                    self._conn.executemany(
                        "INSERT INTO analyses VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", an_rows
                    )
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                self._conn.execute("ROLLBACK")
                raise SinkError(f"store write failed for session {session_id}: {e}") from None
            self._next_id = eid

    def count_events(self, session_id: str, kind: str | None = None) -> int:
        q = "SELECT COUNT(*) FROM events WHERE session_id = ?"
        args: tuple[Any, ...] = (session_id,)
        if kind is not None:
            q += " AND kind = ?"
            args += (kind,)
        with self._lock:
            return int(self._conn.execute(q, args).fetchone()[0])

    def iter_events(self, session_id: str, *, chunk: int = 5000) -> Iterator[tuple[Event, StoredAnalysis | None]]:
        """Events of a session in receive order with their analyses; streams in chunks."""
        last_id = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT e.id, e.platform, e.room, e.kind, e.ts, e.received_ts, e.msg_id, e.user_id,"
                    " e.user_name, e.text, e.count, e.value, e.gift_name, e.stats, e.event,"
                    " a.sentiment, a.p_neg, a.p_neu, a.p_pos, a.confusion, a.confusion_score, a.topics,"
                    " a.keywords, a.asks_host, a.buying_intent, a.distrust, a.confidence, a.classifier"
                    " FROM events e LEFT JOIN analyses a ON a.event_id = e.id"
                    " WHERE e.session_id = ? AND e.id > ? ORDER BY e.id LIMIT ?",
                    (session_id, last_id, chunk),
                ).fetchall()
            if not rows:
                return
            for r in rows:
                ev = Event(
                    platform=r[1], room=r[2], kind=EventKind(r[3]), ts=r[4], received_ts=r[5], msg_id=r[6],
                    user_id=r[7], user_name=r[8], text=r[9], count=r[10], value=r[11], gift_name=r[12],
                    stats=json.loads(r[13]) if r[13] else None, event=r[14],
                )
                an = None
                if r[15] is not None:
                    an = StoredAnalysis(
                        sentiment=r[15], sentiment_probs=(r[16], r[17], r[18]), confusion=bool(r[19]),
                        confusion_score=r[20], topics=tuple(t for t in r[21].split(",") if t),
                        keywords=tuple(k for k in r[22].split(",") if k), asks_host=bool(r[23]),
                        buying_intent=bool(r[24]), distrust=bool(r[25]), confidence=r[26], classifier=r[27],
                        text=r[9] or "",
                    )
                yield ev, an
            last_id = rows[-1][0]

    def viewer_sessions(self, user_ids: Sequence[str] | None = None) -> dict[str, set[str]]:
        """Map viewer hash → the session ids it appeared in (for returning-viewer analytics)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT user_id, session_id FROM events WHERE user_id IS NOT NULL"
            ).fetchall()
        wanted = set(user_ids) if user_ids is not None else None
        out: dict[str, set[str]] = {}
        for uid, sid in rows:
            if wanted is None or uid in wanted:
                out.setdefault(uid, set()).add(sid)
        return out

    # -- suggestions ------------------------------------------------------------------------------

    def save_suggestion(self, session_id: str, s: Suggestion) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO suggestions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    s.id, session_id, s.room, str(s.kind), s.created_ts, s.expires_ts, s.text, s.reason,
                    json.dumps(list(s.examples), ensure_ascii=False), s.confidence, int(s.needs_review),
                    str(s.severity), s.segment, s.topic, s.rule, str(s.state),
                    None if str(s.state) == "pending" else s.data.get("state_ts"),
                    json.dumps(s.data, ensure_ascii=False, default=str),
                ),
            )

    def set_suggestion_state(
        self, session_id: str, suggestion_id: str, state: str, ts: int, data: dict[str, Any] | None = None
    ) -> bool:
        """Record a decision (and, with `data`, the suggestion's latest numbers, e.g. a vote's result)."""
        with self._lock:
            if data is None:
                cur = self._conn.execute(
                    "UPDATE suggestions SET state = ?, state_ts = ? WHERE session_id = ? AND id = ?",
                    (state, ts, session_id, suggestion_id),
                )
            else:
                cur = self._conn.execute(
                    "UPDATE suggestions SET state = ?, state_ts = ?, data = ?"
                    " WHERE session_id = ? AND id = ?",
                    (state, ts, json.dumps(data, ensure_ascii=False, default=str), session_id, suggestion_id),
                )
        return cur.rowcount > 0

    # -- marks (field-control decisions that are not suggestions) ---------------------------------

    def save_mark(
        self, session_id: str, kind: str, key: str, ts: int, data: dict[str, Any] | None = None
    ) -> None:
        """Record one mark (kind "checklist", key "人设", data {"done": true}); the latest per key wins."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO marks VALUES (?,?,?,?,?)",
                (session_id, kind, key, ts, json.dumps(data or {}, ensure_ascii=False, default=str)),
            )

    def marks(self, session_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT kind, key, ts, data FROM marks WHERE session_id = ?"
        args: list[Any] = [session_id]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY ts, key", args).fetchall()
        return [{"kind": k, "key": key, "ts": ts, "data": json.loads(d)} for k, key, ts, d in rows]

    def suggestions(self, session_id: str) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute(
                "SELECT * FROM suggestions WHERE session_id = ? ORDER BY created_ts, id", (session_id,)
            )
            cols = [d[0] for d in cur.description]
            rows = cur.fetchall()
        out = []
        for r in rows:
            d = dict(zip(cols, r, strict=True))
            d["examples"] = json.loads(d["examples"])
            d["data"] = json.loads(d["data"])
            d["needs_review"] = bool(d["needs_review"])
            out.append(d)
        return out

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only helper for reports and tests."""
        with self._lock:
            return self._conn.execute(sql, tuple(args)).fetchall()


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"store schema version {version} is newer than this livebot ({SCHEMA_VERSION}); upgrade livebot"
        )
    for i in range(version, SCHEMA_VERSION):
        conn.executescript("BEGIN;" + _MIGRATIONS[i] + f"; PRAGMA user_version = {i + 1}; COMMIT;")
