"""Access records written in batches by one background thread, flushed on shutdown.

Requests only append to an in-memory queue (no database round trip on the hot path); the
writer inserts up to ``batch_size`` rows at a time every ``interval`` seconds. ``close()``
(called from the ASGI lifespan shutdown and, as a safety net, at interpreter exit) writes
whatever is left, so a normal shutdown loses nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from collections import deque
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

__all__ = ["AccessEntry", "AccessLog", "access_log"]

logger = logging.getLogger(__name__)


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
    request_id: str = ""
    time: datetime = field(default_factory=timezone.now)


class AccessLog:
    """A bounded-latency, batched writer of :class:`AccessEntry` rows."""

    def __init__(self, *, batch_size: int = 500, interval: float = 0.5) -> None:
        self.batch_size = batch_size
        self.interval = interval
        self._queue: deque[AccessEntry] = deque()
        self._wake = threading.Event()
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._start_lock = threading.Lock()

    def add(self, entry: AccessEntry) -> None:
        """Queue one record (cheap; called on the event loop)."""
        self._queue.append(entry)
        if self._thread is None:
            self._start()
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def pending(self) -> int:
        return len(self._queue)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(target=self._run, name="proxy-access-log", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                # The writer must outlive a database blip: the rows stay queued for the next turn.
                logger.exception("access record writer failed; retrying")

    def flush(self) -> int:
        """Write everything queued so far; return how many rows were written.

        Only the rows queued when the flush starts: rows that arrive meanwhile wait for the
        next turn, so under steady traffic the writer writes a few large batches instead of
        chasing the queue with many small ones (each a transaction, and the GIL each time).
        """
        from streaming.proxy.models import AccessRecord

        written = 0
        with self._write_lock:
            try:
                left = len(self._queue)
                while left > 0 and self._queue:
                    batch = []
                    while self._queue and len(batch) < min(self.batch_size, left):
                        batch.append(self._queue.popleft())
                    left -= len(batch)
                    try:
                        _insert(AccessRecord, batch)
                    except Exception:
                        # Keep the rows for the next attempt; a database blip must not lose them.
                        self._queue.extendleft(reversed(batch))
                        logger.exception("access records could not be written; will retry")
                        return written
                    written += len(batch)
            finally:
                with contextlib.suppress(Exception):  # the database may be the thing that is down
                    close_old_connections()
        return written

    def close(self) -> None:
        """Stop the writer and write what is left (normal shutdown)."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._thread = None
        while self._queue and self.flush():
            pass


_COLUMNS = tuple(f.name for f in fields(AccessEntry))
_row = attrgetter(*_COLUMNS)  # an entry's values in column order, "time" last
assert _COLUMNS[-1] == "time"


def _insert(model: type, batch: list[AccessEntry]) -> None:
    """One ``executemany`` INSERT for the batch (one COPY on PostgreSQL): the rows are plain
    values, so the ORM's per-object work (a fifth of a busy proxy's CPU) buys nothing here."""
    if connection.vendor == "postgresql":
        _copy(model, batch)
        return
    ops = connection.ops
    sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608 - the model's own names; values are parameters
        ops.quote_name(model._meta.db_table), ", ".join(ops.quote_name(c) for c in _COLUMNS),
        ", ".join(["%s"] * len(_COLUMNS)))
    adapt = ops.adapt_datetimefield_value  # the backend's form of the "time" column
    rows = [(*r[:-1], adapt(r[-1])) for r in map(_row, batch)]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _copy(model: type, batch: list[AccessEntry]) -> None:
    """PostgreSQL: the batch through one ``COPY ... FROM STDIN`` (psycopg's C row writer), a
    fraction of an INSERT's per-row work in the writer thread."""
    ops = connection.ops
    sql = "COPY {} ({}) FROM STDIN".format(
        ops.quote_name(model._meta.db_table), ", ".join(ops.quote_name(c) for c in _COLUMNS))
    with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for entry in batch:
            copy.write_row(_row(entry))


access_log = AccessLog()
atexit.register(access_log.close)
