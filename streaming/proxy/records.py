"""Access records: on local disk within half a second, in the database exactly once.

A record waiting only in memory is lost by ``kill -9`` and, while the database is away, the
queue grows without bound (issue 12). So a request only appends to a bounded in-memory queue
(no I/O on the event loop), and two background threads take it from there:

- the **journal** thread appends what is queued to this process's journal, an append-only
  JSON Lines file (0600, in a 0700 directory under ``var/``), twice per ``interval`` (0.5 s),
  whatever the database is doing, and fsyncs it at most once per interval;
- the **writer** thread copies the journal into the database in batches (COPY on
  PostgreSQL): from memory while it keeps up, from the file when it has fallen behind (a
  slow or absent database), so memory stays bounded during an outage. Once the database
  holds everything the journal holds, the journal is truncated.

If the queue ever goes over its bound (the journal thread cannot keep up), ``add`` writes
the queue to the journal itself: backpressure on disk, never a dropped row.

A journal whose owner died (its ``flock`` is free) is replayed by the next process that
writes to the same database (on its first request), then deleted. Rows whose commit is in
doubt (a replay, a retry after a failed write) are checked by ``request_id`` before insert,
so a crash between a commit and the truncation writes nothing twice (docs/decisions/0017).
``close()`` (ASGI lifespan shutdown, and interpreter exit) writes whatever is left.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.signals import request_started
from django.db import DataError, IntegrityError, close_old_connections, connection, transaction

from streaming.proxy.journal import (
    COLUMNS,
    AccessEntry,
    Journal,
    claimed,
    encode_entries,
    journal_directory,
    read_entries,
    row_values,
)

__all__ = ["AccessEntry", "AccessLog", "access_log", "encode_entries", "journal_directory"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUED = 10_000  # PORTAL_PROXY_ACCESS_QUEUE_MAX: rows held in memory at most
_LEFTOVER_SCAN_SECONDS = 30.0  # how often a live process looks for journals of dead ones
_MAX_BACKOFF = 5.0  # longest pause between write attempts while the database is away


@dataclass
class _Chunk:
    """Journaled rows the writer may take from memory: bytes ``start``-``end`` of the journal."""

    start: int
    end: int
    entries: list[AccessEntry]


class AccessLog:
    """A bounded, crash-safe, batched writer of :class:`AccessEntry` rows."""

    def __init__(self, *, batch_size: int = 500, interval: float = 0.5, max_queued: int | None = None,
                 directory: Path | None = None) -> None:
        self.batch_size = batch_size
        self.interval = interval
        self.max_queued = max_queued or DEFAULT_MAX_QUEUED  # settled from settings when started
        self._max_queued_given = max_queued is not None
        self._directory = directory  # None: journal_directory(), removed again when left empty
        self._queue: deque[AccessEntry] = deque()
        self._journal: Journal | None = None
        self._journal_lock = threading.Lock()  # appends, truncation and the hand-over below
        self._write_lock = threading.Lock()  # one database writer at a time
        self._ready: deque[_Chunk] = deque()  # journaled, not yet written, still in memory
        self._ready_rows = 0
        self._committed = 0  # the database holds the journal's rows up to this offset
        self._in_doubt = False  # the last write failed: its rows may or may not be committed
        self._leftovers_at = 0.0  # when journals of dead processes are looked for next
        self._wake_journal = threading.Event()
        self._wake_writer = threading.Event()
        self._threads: tuple[threading.Thread, ...] = ()
        self._closed = False
        self._start_lock = threading.Lock()

    def add(self, entry: AccessEntry) -> None:
        """Queue one record (cheap; called on the event loop)."""
        self._queue.append(entry)
        if not self._threads:
            self.start()
        queued = len(self._queue)
        if queued >= self.batch_size:
            self._wake_journal.set()
        if queued > self.max_queued:
            # The journal thread is not keeping up: spill here, the bound holds.
            self._append_queue()

    def pending(self) -> int:
        """Rows held in memory, not yet in the journal (at most ``max_queued``)."""
        return len(self._queue)

    def start(self) -> None:
        """Open this process's journal and start the threads (which first replay leftovers)."""
        with self._start_lock:
            if self._threads and all(t.is_alive() for t in self._threads):
                return
            if not self._max_queued_given:
                self.max_queued = int(getattr(settings, "PORTAL_PROXY_ACCESS_QUEUE_MAX", DEFAULT_MAX_QUEUED))
            self._closed = False
            if self._journal is None:
                self._journal = Journal(self._directory or journal_directory())
                self._committed = 0
            self._threads = (
                threading.Thread(target=self._run_journal, name="proxy-access-journal", daemon=True),
                threading.Thread(target=self._run_writer, name="proxy-access-log", daemon=True),
            )
            for thread in self._threads:
                thread.start()

    # --- journal -----------------------------------------------------------------------

    def _append_queue(self) -> int:
        """Move what is queued to the journal (no fsync); return how many rows moved."""
        with self._journal_lock:
            journal = self._journal
            if journal is None:
                return 0
            entries = []
            for _ in range(len(self._queue)):
                entries.append(self._queue.popleft())
            if not entries:
                return 0
            start, end = journal.append(encode_entries(entries))
            if self._ready_rows + len(entries) <= self.max_queued:
                self._ready.append(_Chunk(start, end, entries))
                self._ready_rows += len(entries)
            # else the writer has fallen behind: it reads these rows back from the file.
        self._wake_writer.set()
        return len(entries)

    def _journal_turn(self) -> None:
        self._append_queue()
        journal = self._journal
        if journal is not None and time.monotonic() - journal.synced_at >= self.interval:
            journal.sync()

    def _run_journal(self) -> None:
        # Twice per interval, so a row waits at most half of it plus a turn to reach the
        # file, and a kill -9 on a busy, slow machine still loses less than ``interval``.
        while not self._closed:
            self._wake_journal.wait(self.interval / 2)
            self._wake_journal.clear()
            try:
                self._journal_turn()
            except Exception:
                # A full or failing disk: the rows stay queued (bounded) and the turn is retried.
                logger.exception("access records could not be journaled; retrying")

    # --- database ----------------------------------------------------------------------

    def _run_writer(self) -> None:
        pause = self.interval
        while not self._closed:
            self._wake_writer.wait(pause)
            self._wake_writer.clear()
            if self._closed:
                return
            refused = self._write_journaled() is None
            pause = min(pause * 2, _MAX_BACKOFF) if refused else self.interval  # away: try less often

    def flush(self) -> int:
        """Write everything queued so far; return how many rows were written.

        Only the rows queued when the flush starts: rows that arrive meanwhile wait for the
        next turn, so under steady traffic the writer writes a few large batches instead of
        chasing the queue with many small ones (each a transaction, and the GIL each time).
        """
        if self._journal is None:
            if not self._queue:
                return 0
            self.start()
        self._append_queue()
        return self._write_journaled() or 0

    def _write_journaled(self) -> int | None:
        """Copy the journal (and any leftover journals that are due) into the database.

        Returns the rows written, or ``None`` when the database refused (they stay journaled).
        """
        written = 0
        with self._write_lock:
            try:
                if time.monotonic() >= self._leftovers_at:
                    written += self._replay_leftovers()
                    self._leftovers_at = time.monotonic() + _LEFTOVER_SCAN_SECONDS
                written += self._write_own()
            except Exception:
                # The writer must outlive a database outage: the rows stay in the journal.
                self._in_doubt = True
                logger.exception("access records could not be written; they wait in the journal")
                return None
            finally:
                with contextlib.suppress(Exception):  # the database may be the thing that is down
                    close_old_connections()
        return written

    def _write_own(self) -> int:
        from streaming.proxy.models import AccessRecord

        journal = self._journal
        if journal is None:
            return 0
        written = 0
        target = journal.end
        while self._committed < target:
            chunk = self._next_chunk(journal, target)
            if chunk is None:
                break
            written += _write_once(AccessRecord, chunk.entries, check=self._in_doubt)
            self._in_doubt = False
            with self._journal_lock:
                self._committed = chunk.end
                while self._ready and self._ready[0].end <= self._committed:
                    self._ready_rows -= len(self._ready.popleft().entries)
        with self._journal_lock:
            if self._committed == journal.end and journal.end:
                journal.truncate()  # everything is in the database: start the file afresh
                self._committed = 0
                self._ready.clear()
                self._ready_rows = 0
        return written

    def _next_chunk(self, journal: Journal, target: int) -> _Chunk | None:
        """The next rows after ``_committed``: from memory if handed over, else from the file."""
        with self._journal_lock:
            while self._ready and self._ready[0].end <= self._committed:
                self._ready_rows -= len(self._ready.popleft().entries)
            if self._ready and self._ready[0].start == self._committed:
                return self._ready[0]
            limit = self._ready[0].start if self._ready else target
        entries, end = read_entries(journal.fd, self._committed, limit, self.batch_size)
        if end == self._committed:
            return None
        return _Chunk(self._committed, end, entries)

    def _replay_leftovers(self) -> int:
        """Write and delete the journals of processes that died (their lock is free)."""
        from streaming.proxy.models import AccessRecord

        directory = self._journal.path.parent if self._journal else journal_directory()
        own = self._journal.path if self._journal else None
        written = 0
        for path in sorted(directory.glob("*.jsonl")):
            if path == own:
                continue
            with claimed(path) as fd:
                if fd is None:
                    continue
                offset, size = 0, os.fstat(fd).st_size
                while offset < size:
                    entries, offset_after = read_entries(fd, offset, size, self.batch_size)
                    if offset_after == offset:
                        break  # a torn last line: its writer died while writing it
                    written += _write_once(AccessRecord, entries, check=True)
                    offset = offset_after
                path.unlink(missing_ok=True)
                logger.warning("replayed the access-record journal %s of a process that ended", path.name)
        return written

    def close(self) -> None:
        """Stop the threads and write what is left (normal shutdown). If the database is away,
        the journal stays on disk and the next process to start writes it."""
        self._closed = True
        self._wake_journal.set()
        self._wake_writer.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        self._threads = ()
        journal = self._journal
        if journal is None:
            return
        with contextlib.suppress(Exception):
            self.flush()
        with self._journal_lock:
            done = not self._queue and journal.end == 0
            with contextlib.suppress(OSError):
                journal.sync()
            journal.close(remove=done)
            if done and self._directory is None:
                with contextlib.suppress(OSError):  # kept while another process's journal is in it
                    journal.path.parent.rmdir()
            self._journal = None
            self._ready.clear()
            self._ready_rows = 0
            self._committed = 0

    def _forget_after_fork(self) -> None:
        """A forked child owns neither the parent's journal nor its threads."""
        self._queue.clear()
        if self._journal is not None:
            with contextlib.suppress(OSError):
                os.close(self._journal.fd)
        self._journal = None
        self._threads = ()
        self._ready.clear()
        self._ready_rows = 0
        self._committed = 0
        self._journal_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._start_lock = threading.Lock()


def _write_once(model: type, batch: list[AccessEntry], *, check: bool) -> int:
    """Insert ``batch``; with ``check``, first leave out rows the database already holds
    (their commit is in doubt). A row the database rejects for its content is logged and
    dropped, so one bad row cannot hold every later one back."""
    if check:
        held = _already_written(model, batch)
        batch = [e for e in batch if e.request_id not in held]
    if not batch:
        return 0
    try:
        _insert(model, batch)
        return len(batch)
    except (DataError, IntegrityError):
        written = 0
        for entry in batch:
            try:
                _insert(model, [entry])
                written += 1
            except (DataError, IntegrityError):
                logger.exception("an access record was rejected by the database and dropped: %r", entry)
        return written


def _already_written(model: type, batch: list[AccessEntry]) -> set[str]:
    """The request ids of ``batch`` that the database holds (looked up within the batch's time
    range, which is indexed)."""
    ids = [e.request_id for e in batch if e.request_id]
    if not ids:
        return set()
    times = [e.time for e in batch]
    return set(model.objects.filter(time__gte=min(times), time__lte=max(times), request_id__in=ids)
               .values_list("request_id", flat=True))


def _insert(model: type, batch: list[AccessEntry]) -> None:
    """One ``executemany`` INSERT for the batch (one COPY on PostgreSQL): the rows are plain
    values, so the ORM's per-object work (a fifth of a busy proxy's CPU) buys nothing here."""
    if connection.vendor == "postgresql":
        _copy(model, batch)
        return
    ops = connection.ops
    sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608 - the model's own names; values are parameters
        ops.quote_name(model._meta.db_table), ", ".join(ops.quote_name(c) for c in COLUMNS),
        ", ".join(["%s"] * len(COLUMNS)))
    adapt = ops.adapt_datetimefield_value  # the backend's form of the "time" column
    rows = [(*r[:-1], adapt(r[-1])) for r in map(row_values, batch)]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _copy(model: type, batch: list[AccessEntry]) -> None:
    """PostgreSQL: the batch through one ``COPY ... FROM STDIN`` (psycopg's C row writer), a
    fraction of an INSERT's per-row work in the writer thread."""
    ops = connection.ops
    sql = "COPY {} ({}) FROM STDIN".format(
        ops.quote_name(model._meta.db_table), ", ".join(ops.quote_name(c) for c in COLUMNS))
    with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for entry in batch:
            copy.write_row(row_values(entry))


access_log = AccessLog()
atexit.register(access_log.close)
os.register_at_fork(after_in_child=access_log._forget_after_fork)


def _start_on_first_request(**_: object) -> None:
    """A restarted portal replays a dead process's journal at its first request of any kind
    (a health check will do), not only at its first proxied one."""
    request_started.disconnect(_start_on_first_request)
    try:
        access_log.start()
    except OSError:
        logger.exception("the access-record journal could not be opened")


request_started.connect(_start_on_first_request, weak=False)
