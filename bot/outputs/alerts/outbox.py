"""SQLite outbox: every alert is stored before any robot sees it; one delivery row per (alert, robot).

Tables live next to the store's (default: the same file) but use their own connection and never touch
`PRAGMA user_version`, which belongs to the store's migrations.

Delivery states::

    pending ──► sent                 the robot acknowledged the message that carried it (alone or in a digest)
       └──────► failed_permanent     the platform rejected it for good, or the robot is misconfigured

A delivery's `attempts` is raised *before* its request goes out, so after a crash in the middle of a request
the row is still pending and that one request is sent again; everything acknowledged is already `sent`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from bot.advisors.base import Severity, Suggestion, SuggestionKind, SuggestionState
from bot.errors import SinkError

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_outbox (
    id          TEXT PRIMARY KEY,      -- Suggestion.id; shown as #xxxxxx in messages
    room        TEXT NOT NULL,
    rule        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    created_ts  INTEGER NOT NULL,      -- Suggestion.created_ts (ms)
    enqueued_ts INTEGER NOT NULL,      -- when the sink stored it (ms, sink clock)
    suggestion  TEXT NOT NULL          -- Suggestion.to_json()
);
CREATE TABLE IF NOT EXISTS alert_outbox_delivery (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,  -- send order per robot
    alert_id        TEXT NOT NULL REFERENCES alert_outbox(id),
    robot           TEXT NOT NULL,
    state           TEXT NOT NULL,                      -- pending | sent | failed_permanent
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ts INTEGER NOT NULL,
    last_attempt_ts INTEGER,
    last_error      TEXT,
    sent_ts         INTEGER,
    message_id      TEXT,                               -- the request that carried it (alert or digest id)
    UNIQUE (alert_id, robot)
);
CREATE INDEX IF NOT EXISTS alert_outbox_delivery_robot_state ON alert_outbox_delivery (robot, state, seq);
"""


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED_PERMANENT = "failed_permanent"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert for one robot, as stored."""

    seq: int
    alert_id: str
    robot: str
    state: DeliveryState
    attempts: int
    next_attempt_ts: int
    last_error: str | None
    sent_ts: int | None
    message_id: str | None
    suggestion: Suggestion


def suggestion_from_json(data: Mapping[str, Any]) -> Suggestion:
    """Inverse of Suggestion.to_json (the outbox keeps the whole record: a restart renders the same text)."""
    return Suggestion(
        id=str(data["id"]),
        room=str(data["room"]),
        kind=SuggestionKind(data["kind"]),
        created_ts=int(data["created_ts"]),
        expires_ts=int(data.get("expires_ts", data["created_ts"])),
        text=str(data.get("text", "")),
        reason=str(data.get("reason", "")),
        examples=tuple(str(e) for e in data.get("examples", ())),
        confidence=float(data.get("confidence", 1.0)),
        needs_review=bool(data.get("needs_review", False)),
        severity=Severity(data.get("severity", Severity.INFO)),
        segment=data.get("segment"),
        topic=data.get("topic"),
        rule=data.get("rule"),
        state=SuggestionState(data.get("state", SuggestionState.PENDING)),
        data=dict(data.get("data") or {}),
    )


_DELIVERY_COLUMNS = (
    "d.seq, d.alert_id, d.robot, d.state, d.attempts, d.next_attempt_ts, d.last_error, d.sent_ts, "
    "d.message_id, a.suggestion"
)


class Outbox:
    """The alert outbox on one SQLite file (WAL). Not thread-safe: used from the event loop only.

    Writes are single short transactions; with WAL and synchronous=NORMAL a commit does not fsync, so they
    don't stall the loop, and a killed process loses nothing that was committed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    # -- lifecycle

    def open(self) -> None:
        if self._db is not None:
            raise RuntimeError("Outbox is already open")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise SinkError(f"cannot open the alert outbox {self.path}: {exc}") from exc
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("Outbox is not open")
        return self._db

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run statements in one IMMEDIATE transaction; returns each statement's rowcount."""
        db = self._conn
        counts: list[int] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    counts.append(db.execute(sql, params).rowcount)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise SinkError(f"alert outbox {self.path}: {exc}") from exc
        return counts

    # -- writes

    def enqueue(
        self,
        s: Suggestion,
        robots: Sequence[str],
        now_ms: int,
        *,
        failed: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Store the alert and a pending delivery per robot (idempotent per alert id and robot).

        `failed` maps robot names that are known to be broken to the reason; their rows are stored as
        failed_permanent right away. Returns the robots that got a new pending delivery.
        """
        failed = failed or {}
        statements: list[tuple[str, Sequence[Any]]] = [
            (
                "INSERT OR IGNORE INTO alert_outbox (id, room, rule, severity, created_ts, enqueued_ts,"
                " suggestion) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    s.id,
                    s.room,
                    s.rule or str(s.kind),
                    str(s.severity),
                    s.created_ts,
                    now_ms,
                    json.dumps(s.to_json(), ensure_ascii=False),
                ),
            )
        ]
        for robot in robots:
            state = DeliveryState.FAILED_PERMANENT if robot in failed else DeliveryState.PENDING
            statements.append(
                (
                    "INSERT OR IGNORE INTO alert_outbox_delivery"
                    " (alert_id, robot, state, next_attempt_ts, last_error) VALUES (?, ?, ?, ?, ?)",
                    (s.id, robot, str(state), now_ms, failed.get(robot)),
                )
            )
        counts = self._write(statements)
        return [r for r, n in zip(robots, counts[1:], strict=True) if n == 1 and r not in failed]

    def mark_attempt(self, seqs: Sequence[int], now_ms: int) -> None:
        """Record that a request carrying these deliveries is about to go out (committed before it does)."""
        self._write(
            (
                "UPDATE alert_outbox_delivery SET attempts = attempts + 1, last_attempt_ts = ?"
                " WHERE seq = ? AND state = 'pending'",
                (now_ms, seq),
            )
            for seq in seqs
        )

    def mark_sent(self, seqs: Sequence[int], now_ms: int, message_id: str) -> None:
        self._write(
            (
                "UPDATE alert_outbox_delivery"
                " SET state = 'sent', sent_ts = ?, message_id = ?, last_error = NULL"
                " WHERE seq = ? AND state = 'pending'",
                (now_ms, message_id, seq),
            )
            for seq in seqs
        )

    def mark_retry(self, seqs: Sequence[int], next_attempt_ts: int, error: str) -> None:
        self._write(
            (
                "UPDATE alert_outbox_delivery SET next_attempt_ts = ?, last_error = ?"
                " WHERE seq = ? AND state = 'pending'",
                (next_attempt_ts, error, seq),
            )
            for seq in seqs
        )

    def mark_failed(self, seqs: Sequence[int], error: str) -> None:
        self._write(
            (
                "UPDATE alert_outbox_delivery SET state = 'failed_permanent', last_error = ?"
                " WHERE seq = ? AND state = 'pending'",
                (error, seq),
            )
            for seq in seqs
        )

    def fail_pending(self, robot: str, error: str) -> int:
        """Mark every pending delivery of `robot` failed (the robot is misconfigured); returns how many."""
        (n,) = self._write(
            [
                (
                    "UPDATE alert_outbox_delivery SET state = 'failed_permanent', last_error = ?"
                    " WHERE robot = ? AND state = 'pending'",
                    (error, robot),
                )
            ]
        )
        return n

    def prune(self, before_ms: int) -> int:
        """Forget alerts enqueued before `before_ms` whose deliveries are all finished."""
        counts = self._write(
            [
                (
                    "DELETE FROM alert_outbox_delivery WHERE alert_id IN (SELECT id FROM alert_outbox a"
                    " WHERE a.enqueued_ts < ? AND NOT EXISTS (SELECT 1 FROM alert_outbox_delivery d"
                    " WHERE d.alert_id = a.id AND d.state = 'pending'))",
                    (before_ms,),
                ),
                (
                    "DELETE FROM alert_outbox WHERE enqueued_ts < ? AND NOT EXISTS"
                    " (SELECT 1 FROM alert_outbox_delivery d WHERE d.alert_id = alert_outbox.id)",
                    (before_ms,),
                ),
            ]
        )
        return counts[1]

    # -- reads

    def pending(self, robot: str, limit: int = 200) -> list[Delivery]:
        """Pending deliveries of `robot` in send order (oldest first)."""
        return self._select(
            f"SELECT {_DELIVERY_COLUMNS} FROM alert_outbox_delivery d"
            " JOIN alert_outbox a ON a.id = d.alert_id"
            " WHERE d.robot = ? AND d.state = 'pending' ORDER BY d.seq LIMIT ?",
            (robot, limit),
        )

    def deliveries(self, robot: str | None = None) -> list[Delivery]:
        """Every delivery (optionally of one robot) in send order; for `livebot` diagnostics and tests."""
        where, params = ("WHERE d.robot = ?", (robot,)) if robot else ("", ())
        return self._select(
            f"SELECT {_DELIVERY_COLUMNS} FROM alert_outbox_delivery d"
            " JOIN alert_outbox a ON a.id = d.alert_id"
            f" {where} ORDER BY d.seq",
            params,
        )

    def recent_requests(self, robot: str, since_ms: int) -> list[int]:
        """Times of acknowledged requests to `robot` since `since_ms` (one per message, digests count once).

        Seeds the rate limiter after a restart: the platform still remembers what we sent a minute ago.
        """
        rows = self._conn.execute(
            "SELECT MIN(sent_ts) FROM alert_outbox_delivery"
            " WHERE robot = ? AND state = 'sent' AND sent_ts >= ?"
            " GROUP BY message_id ORDER BY 1",
            (robot, since_ms),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def pending_robots(self) -> dict[str, int]:
        """Robots with pending deliveries and how many (finds rows left for a robot no longer configured)."""
        rows = self._conn.execute(
            "SELECT robot, COUNT(*) FROM alert_outbox_delivery WHERE state = 'pending' GROUP BY robot"
        ).fetchall()
        return {str(robot): int(n) for robot, n in rows}

    def counts(self, robot: str | None = None) -> dict[DeliveryState, int]:
        where, params = ("WHERE robot = ?", (robot,)) if robot else ("", ())
        rows = self._conn.execute(
            f"SELECT state, COUNT(*) FROM alert_outbox_delivery {where} GROUP BY state", params
        ).fetchall()
        out = dict.fromkeys(DeliveryState, 0)
        out.update({DeliveryState(state): n for state, n in rows})
        return out

    def _select(self, sql: str, params: Sequence[Any]) -> list[Delivery]:
        try:
            rows = self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise SinkError(f"alert outbox {self.path}: {exc}") from exc
        return [
            Delivery(
                seq=row[0],
                alert_id=row[1],
                robot=row[2],
                state=DeliveryState(row[3]),
                attempts=row[4],
                next_attempt_ts=row[5],
                last_error=row[6],
                sent_ts=row[7],
                message_id=row[8],
                suggestion=suggestion_from_json(json.loads(row[9])),
            )
            for row in rows
        ]
