"""A database outage neither grows the proxy's memory nor loses an access record.

Each test runs the access-record writer in a process of its own (``python -c``), on a database
of its own (a SQLite file, or a fresh PostgreSQL database when DATABASE_URL points at one),
and makes the database fail for real: its write lock held by another connection (writes wait,
then fail), or its address a closed port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.records_kill import Database
from tests.conftest import require
from tests.upstreams.launch import free_port

ROOT = Path(__file__).resolve().parents[3]
ROWS = 100_000
BOUND = 1_000

CHILD = """
import json, resource, sys, time
import django
django.setup()
from django.db import connection
from streaming.proxy.models import AccessRecord
from streaming.proxy.records import AccessEntry, AccessLog

command, rows, bound = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if command == "create":
    with connection.schema_editor() as editor:
        editor.create_model(AccessRecord)
    sys.exit(0)

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def say(**values):
    print(json.dumps(values), flush=True)

log = AccessLog(max_queued=bound)
if command == "replay":  # a later process: writes what the journal of the one before holds
    log.start()
else:
    for i in range(2000):  # warm-up: the writer's threads, the journal, the driver
        log.add(AccessEntry("wendy", "echo", "GET", f"/warm/{i}", 200, "allow", 0, 10, 1.0))
    time.sleep(1)
    before, most = peak_mib(), 0
    for i in range(rows):
        log.add(AccessEntry("wendy", "echo", "GET", f"/outage/{i}?q=" + "x" * 40, 200, "allow",
                            0, 10, 1.0, client_address="10.1.2.3"))
        most = max(most, log.pending())
    say(peak_growth_mib=peak_mib() - before, most_pending=most)
    if command == "down":
        log.close()  # the database is still away: the journal stays for the next process
        sys.exit(0)
    sys.stdin.readline()  # the database is back
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        if AccessRecord.objects.filter(path__startswith="/outage/").count() >= rows:
            break
    except Exception:
        pass
    time.sleep(0.2)
log.close()
say(done=True)
"""


@pytest.fixture
def database() -> Iterator[Database]:
    url = os.environ.get("DATABASE_URL") or ""
    with tempfile.TemporaryDirectory(prefix="records-outage-") as scratch:
        db = Database(url, Path(scratch))
        try:
            _child(db.url, "create")
            yield db
        finally:
            db.drop()


def _child(url: str, command: str, rows: int = ROWS) -> subprocess.Popen | None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="portal.settings")
    args = [sys.executable, "-c", CHILD, command, str(rows), str(BOUND)]
    if command == "create":
        subprocess.run(args, cwd=ROOT, env=env, check=True, timeout=60)
        return None
    return subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def _said(child: subprocess.Popen) -> dict:
    line = child.stdout.readline()
    assert line, f"the writer process ended early (exit {child.wait(timeout=30)})"
    return json.loads(line)


def _outage_records(db: Database) -> tuple[int, int]:
    conn = db.connect()
    try:
        return conn.execute("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM proxy_accessrecord "
                            "WHERE path LIKE '/outage/%'").fetchone()
    finally:
        conn.close()


def test_while_the_database_is_stuck_memory_stays_bounded_and_every_record_arrives_once_it_is_back(
        database):
    with database.write_lock():
        child = _child(database.url, "stuck")
        during = _said(child)
        assert during["most_pending"] <= BOUND + 1, during
        # 100,000 records held in memory take ~80 MiB; bounded, the writer needs a few.
        assert during["peak_growth_mib"] < 25, during
        assert _outage_records(database) == (0, 0)  # really nothing reached the database
    child.stdin.write("back\n")
    child.stdin.flush()
    assert _said(child) == {"done": True}
    assert child.wait(timeout=30) == 0
    assert _outage_records(database) == (ROWS, ROWS)  # every one, exactly once


def test_records_taken_while_the_database_is_unreachable_are_written_by_the_next_process(database):
    require(database.is_postgres, "PostgreSQL (DATABASE_URL) to make unreachable")
    unreachable = urlsplit(database.url)._replace(netloc=f"postgres@127.0.0.1:{free_port()}").geturl()
    rows = 20_000
    child = _child(unreachable, "down", rows)
    during = _said(child)
    assert during["most_pending"] <= BOUND + 1, during
    assert child.wait(timeout=120) == 0
    later = _child(database.url, "replay", rows)
    assert _said(later) == {"done": True}
    assert later.wait(timeout=30) == 0
    assert _outage_records(database) == (rows, rows)
