"""Vote prompts: a prompt with options (扣1 燕麦色 / 扣2 驼色 …) and a live count per option.

Comments after the prompt and within its window count for the first option whose keywords they match (the
same matching as prompt responses, `bot.advisors.prompts.matches`). The screen shows the running count; when
the window closes the result is final and goes into the prompt suggestion's `data["vote"]`, which the store
keeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.advisors.common import AdvisorMemory, VoteRecord
from bot.advisors.prompts import matches

if TYPE_CHECKING:
    from bot.advisors.base import Suggestion
    from bot.state import RoomState

SHOW_CLOSED_MS = 120_000
"""A closed vote stays on the screen this long."""


def register(memory: AdvisorMemory, s: Suggestion, default_window_s: int) -> VoteRecord | None:
    """Start counting for a prompt suggestion that carries options (data["options"]); None otherwise."""
    options = s.data.get("options")
    if not options:
        return None
    window = int(s.data.get("vote_window_s") or default_window_s)
    rec = VoteRecord(
        id=s.id, ts=s.created_ts, ends_ts=s.created_ts + window * 1000,
        prompt=str(s.data.get("prompt", s.text)),
        options=tuple((str(o["label"]), tuple(o["keywords"])) for o in options),
    )
    memory.votes.append(rec)
    return rec


def tally(state: RoomState, rec: VoteRecord, now: int) -> tuple[int, ...]:
    """Count per option of the comments in (rec.ts, min(now, rec.ends_ts)]."""
    end = min(now, rec.ends_ts)
    counts = [0] * len(rec.options)
    for c in reversed(state.recent_comments):
        if c.ts <= rec.ts:
            break
        if c.ts > end:
            continue
        for i, (_, keywords) in enumerate(rec.options):
            if matches(c.text, keywords):
                counts[i] += 1
                break
    return tuple(counts)


def result(rec: VoteRecord, counts: tuple[int, ...], now: int) -> dict[str, Any]:
    """The vote as the screen and the store see it."""
    total = sum(counts)
    best = max(range(len(counts)), key=lambda i: (counts[i], -i)) if total else None
    return {
        "id": rec.id,
        "prompt": rec.prompt,
        "ts": rec.ts,
        "ends_ts": rec.ends_ts,
        "closed": now >= rec.ends_ts,
        "total": total,
        "options": [
            {"label": label, "count": n, "share": round(n / total, 4) if total else 0.0}
            for (label, _), n in zip(rec.options, counts, strict=True)
        ],
        "leader": rec.options[best][0] if best is not None else None,
    }


def close_due(state: RoomState, memory: AdvisorMemory, now: int) -> list[dict[str, Any]]:
    """Final results of the votes whose window has closed since the last call."""
    out = []
    for rec in memory.votes:
        if rec.counts is None and now >= rec.ends_ts:
            rec.counts = tally(state, rec, now)
            out.append(result(rec, rec.counts, now))
    return out


def live(state: RoomState, memory: AdvisorMemory, now: int, limit: int = 3) -> list[dict[str, Any]]:
    """Open votes with their running count and votes closed within the last two minutes, newest first."""
    out = []
    for rec in reversed(memory.votes):
        if rec.ends_ts < now - 10 * SHOW_CLOSED_MS:
            break  # older ones ended long ago too
        if rec.counts is not None and now - rec.ends_ts > SHOW_CLOSED_MS:
            continue
        counts = rec.counts if rec.counts is not None else tally(state, rec, now)
        out.append(result(rec, counts, now))
        if len(out) >= limit:
            break
    return out
