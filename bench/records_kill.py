"""Access records after ``kill -9`` under load: how many answered requests have no record.

    .venv/bin/python bench/records_kill.py [--connections 8] [--seconds 3] [--stall] [--rounds 1]
                                           [--json]

Starts a real portal (uvicorn, one worker, plain HTTP from 127.0.0.1 trusted as behind a TLS
balancer) on a database of its own (a SQLite file in a temp directory; with DATABASE_URL
pointing at PostgreSQL, a fresh database created on that server and dropped afterwards),
loads it with ``--connections`` clients for ``--seconds`` (every request has a unique path
under ``/apps/records-bench/``, and the portal keeps an access record for each), kills it
with SIGKILL, restarts it (its first request replays the dead process's journal), and
compares the records in the database with the requests that were answered before the kill.

``--stall`` holds the access-record table's write lock from another connection for the
loaded seconds (a slow or stuck database: SQLite's writers wait, PostgreSQL's COPY blocks),
so the records can only survive through the journal.

Prints, per round: requests answered, records found, records missing, and the age at the
kill of the oldest answered request without a record (the bound is the journal interval,
0.5 s). ``--json`` prints the rounds as JSON (the test suite reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PREFIX = "/apps/records-bench/"
_TOKEN = re.compile(r"rk-(\d+-\d+-\d+)")  # the request's own mark, wherever the record keeps the path


@dataclass
class KillRound:
    """What one kill -9 cost."""

    answered: int  # responses the clients received before the kill
    recorded: int  # of those, records in the database after the restart
    missing: int
    oldest_missing_age: float  # seconds between that answer and the kill (0 when none is missing)
    requests_per_second: float
    stalled: bool


def _free_port() -> int:
    from tests.upstreams.launch import free_port

    return free_port()


class Database:
    """The portal's database for the run: raw driver connections, no Django in this process."""

    def __init__(self, url: str, scratch: Path) -> None:
        self.admin_url = url
        if url.startswith("postgres"):
            import psycopg

            name = f"records_kill_{os.getpid()}"
            self.url = urlsplit(url)._replace(path=f"/{name}").geturl()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                conn.execute(f'CREATE DATABASE "{name}"')
            self.name = name
        else:
            self.name = ""
            self.url = f"sqlite:///{scratch / 'portal.sqlite3'}"

    @property
    def is_postgres(self) -> bool:
        return bool(self.name)

    def migrate(self) -> None:
        subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, check=True,
                       env={**_env(), "DATABASE_URL": self.url})
        if not self.is_postgres:
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
                conn.execute("PRAGMA journal_mode=WAL")  # readers go on while a writer holds the lock

    def connect(self) -> Any:
        if self.is_postgres:
            import psycopg

            return psycopg.connect(self.url, autocommit=True)
        return sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)

    def tokens(self) -> set[str]:
        conn = self.connect()
        try:
            rows = conn.execute("SELECT path FROM proxy_accessrecord WHERE path LIKE '%rk-%'")
            return {m.group(1) for (path,) in rows.fetchall() if (m := _TOKEN.search(path))}
        finally:
            conn.close()

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the access-record table's write lock (reads go on) until the block ends."""
        conn = self.connect()
        try:
            conn.execute("BEGIN" if self.is_postgres else "BEGIN IMMEDIATE")
            if self.is_postgres:
                conn.execute("LOCK TABLE proxy_accessrecord IN EXCLUSIVE MODE")
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()

    def drop(self) -> None:
        if self.is_postgres:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(DJANGO_SETTINGS_MODULE="portal.settings", PORTAL_TRUSTED_PROXIES="127.0.0.1/32")
    return env


class Portal:
    """One portal process (uvicorn, one worker) on a fixed port."""

    def __init__(self, db: Database, port: int) -> None:
        self.db, self.port = db, port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        from portal.server import HTTP_PROTOCOL

        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--http", HTTP_PROTOCOL,
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "critical", "--no-access-log",
             "--no-proxy-headers", "--no-server-header"],
            cwd=ROOT, env={**_env(), "DATABASE_URL": self.db.url}, stderr=subprocess.DEVNULL)
        import httpx

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1,
                          headers={"X-Forwarded-Proto": "https"})
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the portal did not start")

    def kill(self) -> float:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        self.process.wait()
        return killed

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _load(port: int, connections: int, stop: threading.Event,
          mark: int) -> tuple[dict[str, float], list[threading.Thread]]:
    """Clients that request unique paths until ``stop``; what each answer was, and when."""
    import httpx

    answered: dict[str, float] = {}

    def client(number: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-Forwarded-Proto": "https"},
                          timeout=10) as http:
            i = 0
            while not stop.is_set():
                token = f"{mark}-{number}-{i}"  # unique across rounds on one database
                i += 1
                try:
                    http.get(f"{PREFIX}rk-{token}")
                except httpx.HTTPError:
                    return  # the portal was killed under this request: it was never answered
                answered[token] = time.monotonic()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(connections)]
    for thread in threads:
        thread.start()
    return answered, threads


def kill_round(db: Database, *, connections: int, seconds: float, stall: bool, mark: int = 0) -> KillRound:
    """Load a portal, kill -9 it, restart it, and count what the database holds."""
    portal = Portal(db, _free_port())
    portal.start()
    stop = threading.Event()
    try:
        lock = db.write_lock() if stall else None
        if lock is not None:
            lock.__enter__()
        try:
            answered, threads = _load(portal.port, connections, stop, mark)
            started = time.monotonic()
            time.sleep(seconds)
            killed = portal.kill()
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
            elapsed = killed - started
        finally:
            if lock is not None:
                lock.__exit__(None, None, None)
        answered = {token: at for token, at in answered.items() if at <= killed}
        portal.start()  # its first request (the readiness probe) replays the dead one's journal
        deadline, recorded, last_change = time.monotonic() + 60, set(), time.monotonic()
        while time.monotonic() < deadline:
            found = db.tokens() & answered.keys()
            if found != recorded:
                recorded, last_change = found, time.monotonic()
            if len(recorded) == len(answered) or time.monotonic() - last_change > 3:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        portal.stop()
    missing = answered.keys() - recorded
    return KillRound(answered=len(answered), recorded=len(recorded), missing=len(missing),
                     oldest_missing_age=round(max((killed - answered[t] for t in missing), default=0.0), 3),
                     requests_per_second=round(len(answered) / elapsed, 1), stalled=stall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--stall", action="store_true", help="hold the table's write lock while loaded")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="records-kill-"))
    db = Database(os.environ.get("DATABASE_URL") or "", scratch)
    try:
        db.migrate()
        rounds = [kill_round(db, connections=args.connections, seconds=args.seconds, stall=args.stall,
                             mark=n) for n in range(args.rounds)]
    finally:
        db.drop()
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps([asdict(r) for r in rounds]))
        return
    print(f"connections={args.connections} seconds={args.seconds} stall={args.stall} "
          f"db={'postgresql' if db.is_postgres else 'sqlite'} cores={os.cpu_count()}")
    print(f"{'answered':>9} {'recorded':>9} {'missing':>8} {'oldest missing (s)':>19} {'req/s':>8}")
    for r in rounds:
        print(f"{r.answered:9} {r.recorded:9} {r.missing:8} {r.oldest_missing_age:19.3f} "
              f"{r.requests_per_second:8.0f}")


if __name__ == "__main__":
    main()
