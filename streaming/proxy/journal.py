"""The access records' journal: one append-only JSON Lines file per process, and its rows.

What the proxy's access records (:mod:`streaming.proxy.records`) write to local disk before
the database has them: the row type itself, its encoding as a journal line and back, the
journal file (0600 in a 0700 directory, under an exclusive ``flock`` while its owner lives),
and reading whole lines back from any journal, a dead process's included.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

__all__ = ["COLUMNS", "AccessEntry", "Journal", "claimed", "decode_line", "encode_entries",
           "journal_directory", "read_entries", "row_values"]

logger = logging.getLogger(__name__)

_READ_BYTES = 1024 * 1024  # what the writer reads of a journal at a time when it has fallen behind


def _request_id() -> str:
    return os.urandom(16).hex()


@dataclass(frozen=True)
class AccessEntry:
    """One proxied request, as it will be stored."""

    actor: str
    resource: str
    method: str
    path: str
    status: int
    decision: str
    bytes_in: int
    bytes_out: int
    duration_ms: float
    client_address: str = ""
    request_id: str = field(default_factory=_request_id)  # what makes a replay exactly-once
    time: datetime = field(default_factory=timezone.now)


COLUMNS = tuple(f.name for f in fields(AccessEntry))
row_values = attrgetter(*COLUMNS)  # an entry's values in column order, "time" last
assert COLUMNS[-1] == "time"
_json = json.JSONEncoder(separators=(",", ":")).encode  # ASCII only: a line is always valid UTF-8


def encode_entries(entries: list[AccessEntry]) -> bytes:
    """Journal lines for ``entries``: one JSON array per line, columns in model order."""
    return "".join([_json([*r[:-1], r[-1].isoformat()]) + "\n" for r in map(row_values, entries)]).encode()


def decode_line(line: bytes) -> AccessEntry:
    """The entry a journal line holds (raises ``ValueError`` for a line that is not one)."""
    values = json.loads(line)
    if not isinstance(values, list) or len(values) != len(COLUMNS):
        raise ValueError("not an access record")
    return AccessEntry(*values[:-1], time=datetime.fromisoformat(values[-1]))


def journal_directory() -> Path:
    """Where this process keeps journals: one directory per database, so a journal is only
    ever replayed into the database it was meant for (a test run's never reaches the demo's).
    The database is its engine and name, not its address: a fail-over to another host is
    still the same database."""
    base = Path(getattr(settings, "PORTAL_PROXY_ACCESS_JOURNAL_DIR", None)
                or Path(settings.VAR_DIR) / "access-records")
    db = connection.settings_dict
    key = "|".join(str(db.get(k) or "") for k in ("ENGINE", "NAME"))
    return base / hashlib.sha256(key.encode()).hexdigest()[:16]


def _private_directory(path: Path) -> None:
    """Make ``path`` (and its parent, if missing) 0700: journals hold who reached what."""
    missing = [p for p in (path.parent, path) if not p.exists()]
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for directory in {*missing, path}:
        directory.chmod(0o700)


class Journal:
    """This process's append-only journal file, held under an exclusive ``flock``."""

    def __init__(self, directory: Path) -> None:
        _private_directory(directory)
        self.path = directory / f"{os.getpid()}-{os.urandom(4).hex()}.jsonl"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.end = 0  # bytes in the file
        self.synced_at = time.monotonic()
        self.dirty = False

    def append(self, data: bytes) -> tuple[int, int]:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        start, self.end = self.end, self.end + len(data)
        self.dirty = True
        return start, self.end

    def sync(self) -> None:
        if self.dirty:
            self.dirty = False
            os.fsync(self.fd)
        self.synced_at = time.monotonic()

    def truncate(self) -> None:
        os.ftruncate(self.fd, 0)
        self.end = 0

    def close(self, *, remove: bool) -> None:
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def read_entries(fd: int, offset: int, limit: int, max_rows: int) -> tuple[list[AccessEntry], int]:
    """Up to ``max_rows`` entries from whole lines of ``fd`` between ``offset`` and ``limit``,
    and the offset after the last line read. A torn last line (its writer was killed mid-write)
    is left unread; a line that is not a record is logged and skipped."""
    entries: list[AccessEntry] = []
    size = _READ_BYTES
    while offset < limit and len(entries) < max_rows:
        chunk = os.pread(fd, min(size, limit - offset), offset)
        if not chunk:
            break
        lines = chunk.split(b"\n")
        if len(lines) == 1:  # no whole line in the chunk
            if offset + len(chunk) >= limit:
                break
            size *= 2
            continue
        for line in lines[:-1]:
            offset += len(line) + 1
            try:
                entries.append(decode_line(line))
            except (ValueError, TypeError):
                logger.error("skipped an unreadable access-record journal line (%d bytes)", len(line))
            if len(entries) >= max_rows:
                break
    return entries, offset


@contextlib.contextmanager
def claimed(path: Path) -> Iterator[int | None]:
    """An open descriptor of ``path`` under its exclusive lock, or ``None`` if its owner lives
    (or another process is replaying it, or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield fd if os.fstat(fd).st_nlink else None  # unlinked by a replayer that finished first
    finally:
        os.close(fd)
