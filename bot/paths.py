"""Where optional data lives: `../shared/` beside the repository (tests, benchmarks, `train --data`)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """`$LIVEBOT_SHARED`, else `../shared` next to the repository root; None when absent."""
    env = os.environ.get("LIVEBOT_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared")
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None


def replay_comments_file() -> Path | None:
    d = shared_dir()
    if d is None:
        return None
    p = d / "data" / "replay" / "livechat_douyin_comments.txt"
    return p if p.is_file() else None


def eval_files() -> list[Path]:
    d = shared_dir()
    return sorted((d / "data" / "eval").glob("*.tsv")) if d is not None else []
