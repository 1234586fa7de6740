"""Viewer-id hashing: HMAC-SHA256 with a per-installation salt (DESIGN.md *Interfaces*).

Hashing happens in the source adapter, before an Event exists, so a raw platform id never
reaches the queue, the store or a log line. The same viewer keeps the same id across sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SALT_FILE = "salt"


def load_or_create_salt(data_dir: str | os.PathLike[str]) -> bytes:
    """Read `<data_dir>/salt`, creating it (32 random bytes, mode 0600) on first use."""
    path = Path(data_dir) / SALT_FILE
    if path.exists():
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_bytes(32)
    # O_EXCL: two processes starting together must not overwrite each other's salt.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(salt.hex())
    return salt


class ViewerHasher:
    """Turns platform user ids into stable 16-hex-char pseudonyms."""

    __slots__ = ("_salt",)

    def __init__(self, salt: bytes) -> None:
        if len(salt) < 16:
            raise ValueError("salt must be at least 16 bytes")
        self._salt = salt

    def __call__(self, platform: str, raw_id: str | int | None) -> str | None:
        if raw_id is None or raw_id == "" or raw_id == 0:
            return None
        msg = f"{platform}:{raw_id}".encode()
        return hmac.new(self._salt, msg, hashlib.sha256).hexdigest()[:16]

    @classmethod
    def for_tests(cls) -> ViewerHasher:
        return cls(b"livebot-test-salt-not-for-production")
