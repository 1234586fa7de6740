"""Generate a large replay log (JSONL) from the seeded Simulator room, for the report scale test.

    .venv/bin/python scripts/gen_big_log.py big.jsonl                   # 3 h, exactly 200,000 comments
    .venv/bin/python scripts/gen_big_log.py big.jsonl --hours 1 --comments 50000

The Simulator's comment rate is linear in its base `rate`, so the base rate is calibrated from the
expected rate curve, then surplus comments are dropped evenly (every k-th) so the file holds exactly
`--comments` chat lines. Other events (enters, likes, gifts, follows, shares, online stats) stay as
generated. Same arguments, same file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bot.events import EventKind
from bot.sources.simulator import Simulator

OVERSHOOT = 1.02
"""Generate ~2% more comments than asked, so thinning always has something to drop."""


def calibrated_rate(duration_s: float, comments: int, *, seed: int) -> float:
    """Base rate whose expected comment count over `duration_s` is `comments * OVERSHOOT`."""
    probe = Simulator(seed=seed, rate=1.0)
    expected_at_1 = sum(probe.comment_rate(t + 0.5) for t in range(int(duration_s)))
    return comments * OVERSHOOT / expected_at_1


def count_comments(sim: Simulator, duration_s: float) -> int:
    return sum(1 for ev in sim.events(duration_s) if ev.kind is EventKind.CHAT)


def write_log(path: Path, *, hours: float, comments: int, seed: int, room: str) -> dict[str, float]:
    duration_s = hours * 3600
    rate = calibrated_rate(duration_s, comments, seed=seed)
    sim = Simulator(seed=seed, rate=rate, room=room)
    generated = count_comments(sim, duration_s)
    if generated < comments:
        raise SystemExit(f"generated only {generated} comments (< {comments}); raise OVERSHOOT")
    surplus = generated - comments
    # Drop comment number i when floor((i+1)*surplus/generated) steps: evenly spread, deterministic.
    written = events = 0
    with path.open("w", encoding="utf-8") as f:
        i = 0
        for ev in sim.events(duration_s):
            if ev.kind is EventKind.CHAT:
                drop = (i + 1) * surplus // generated != i * surplus // generated
                i += 1
                if drop:
                    continue
                written += 1
            f.write(ev.to_line())
            f.write("\n")
            events += 1
    return {"rate": rate, "comments": written, "events": events, "generated": generated}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="JSONL file to write")
    ap.add_argument("--hours", type=float, default=3.0, help="show length (default 3)")
    ap.add_argument("--comments", type=int, default=200_000, help="exact number of comments (default 200000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--room", default="bigroom")
    args = ap.parse_args(argv)
    if args.hours <= 0 or args.comments < 1:
        ap.error("--hours and --comments must be positive")
    t0 = time.perf_counter()
    info = write_log(args.out, hours=args.hours, comments=args.comments, seed=args.seed, room=args.room)
    size_mb = args.out.stat().st_size / 1e6
    print(
        f"{args.out}: {info['comments']:.0f} comments, {info['events']:.0f} events, {size_mb:.1f} MB "
        f"(base rate {info['rate']:.2f}/s, {time.perf_counter() - t0:.1f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
