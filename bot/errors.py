"""Errors a user or operator can act on.

Exception tree::

    LivebotError                 anything livebot reports as a one-line message (CLI exit code 2)
     ├── ConfigError             a bad config file, key or value (names the dotted key)
     ├── ScriptError             a bad run-sheet YAML (names file, line and field)
     ├── ProtocolError           bytes or JSON from a source that break its wire format
     ├── SourceError             a source cannot connect, authenticate or read its input
     ├── SinkError               a sink (store, screen, robot) cannot take output
     └── ModelError              a classifier model cannot be found or loaded

Anything else escaping to the CLI is a bug and keeps its traceback.
"""

from __future__ import annotations


class LivebotError(Exception):
    """Base of every error that is reported to the user as one clear line."""


class ConfigError(LivebotError):
    """A config key is unknown or its value is invalid."""

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None) -> None:
        self.key = key
        self.file = file
        where = f"{file}: " if file else ""
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}")


class ScriptError(LivebotError):
    """A run-sheet YAML file is invalid."""

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        loc = file or "<script>"
        if line is not None:
            loc += f":{line}"
        what = f" {field}:" if field else ""
        super().__init__(f"{loc}:{what} {message}")


class ProtocolError(LivebotError):
    """Input that violates a wire or file format; the offending unit is skipped."""

    def __init__(self, message: str, *, key: str | None = None, line: int | None = None) -> None:
        self.key = key
        self.line = line
        super().__init__(message)


class SourceError(LivebotError):
    """A source cannot connect, authenticate or read its input."""

    def __init__(self, message: str, *, room: str | None = None) -> None:
        self.room = room
        super().__init__(f"room={room}: {message}" if room else message)


class SinkError(LivebotError):
    """A sink cannot accept output."""


class ModelError(LivebotError):
    """A classifier model cannot be found or loaded."""
