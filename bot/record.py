"""`livebot record`: one live source's Events written as this project's replay JSONL, for replay later.

The file is the replay format of DESIGN.md (`Event.to_line()`: generic JSON plus `received_ts`, viewer ids
already hashed), so `livebot replay` reads it back unchanged. Lines are written as they arrive and flushed
once per burst (everything a source emitted in one event-loop turn, e.g. one Bilibili frame), so a stop at
any moment, Ctrl+C included, loses nothing the source had already handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bot.errors import LivebotError
from bot.events import Event
from bot.sources.base import Source, SourceStatus

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


class JsonlRecorder:
    """An `emit` callback that appends each Event as one JSONL line; use as a context manager."""

    def __init__(self, path: Path, *, append: bool = False) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        """Events written, per kind."""
        self._append = append
        self._file: IO[str] | None = None
        self._flush_scheduled = False

    def __enter__(self) -> JsonlRecorder:
        if self._file is not None:
            raise RuntimeError("JsonlRecorder is already open")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a" if self._append else "x", encoding="utf-8", newline="\n")
        except FileExistsError:
            raise LivebotError(f"{self.path} already exists; choose another file or pass --append") from None
        except OSError as e:
            raise LivebotError(f"cannot write {self.path}: {e.strerror or e}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    async def __call__(self, event: Event) -> None:
        if self._file is None:
            raise RuntimeError("JsonlRecorder is not open")
        self._file.write(event.to_line() + "\n")
        self.counts[str(event.kind)] += 1
        if not self._flush_scheduled:
            # Sources emit a frame's events back to back without yielding: flush once they are all written.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._file is not None and not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        """Flush, sync to disk and close; safe to call twice."""
        f, self._file = self._file, None
        if f is None:
            return
        try:
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()


@dataclass
class RecordResult:
    path: Path
    counts: Counter[str]
    status: SourceStatus
    duplicates: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """What was recorded, for the operator (Chinese, like the other command summaries)."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.counts.items())) or "无"
        st = self.status
        lines = [
            f"已录制 {self.total} 条事件 → {self.path} ({kinds})",
            f"  来源 {st.name}: 消息 {st.messages}, 错误 {st.errors}, 重连 {st.reconnects}, "
            f"重复丢弃 {self.duplicates}",
        ]
        if st.unknown_kinds:
            unknown = ", ".join(f"{k} ×{n}" for k, n in st.unknown_kinds.most_common(8))
            lines.append(f"  未识别的消息类型 (已计数跳过): {unknown}")
        if st.last_error:
            lines.append(f"  最近错误: {st.last_error}")
        return "\n".join(lines)


async def record(
    source: Source,
    path: Path,
    *,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
    append: bool = False,
) -> RecordResult:
    """Run `source` into a JSONL file until `duration_s` passes, `stop` is set or the source ends.

    Raises:
        LivebotError: the file exists (without `append`) or cannot be written.
    """
    stop = stop or asyncio.Event()
    with JsonlRecorder(path, append=append) as recorder:
        task = asyncio.create_task(source.run(recorder), name=f"record-{source.status.name}")
        waiter = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, waiter}, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            source.stop()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await asyncio.wait({task})
            except TimeoutError:
                log.error("source %s did not stop within %.0f s", source.status.name, STOP_TIMEOUT_S)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        error = task.exception() if task.done() and not task.cancelled() else None
        if error is not None:
            raise error
    duplicates = getattr(source, "duplicates", getattr(source, "duplicates_dropped", 0))
    return RecordResult(
        path=path, counts=recorder.counts, status=source.status,
        duplicates=duplicates if isinstance(duplicates, int) else 0,
    )
