"""Files under var/ (database with every TOTP seed, secret key, TLS keys, logs) are the portal's own.

A local user who could read ``var/portal.sqlite3`` or its ``-wal`` would hold every second
factor; these tests start from an empty var directory, or an older install's modes, and check
what another user could read.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal import config
from portal.config import load_config, secure_var_dir

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """A shell's usual umask (022): what the portal process starts with on most machines."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_fresh_var_directory_and_its_sqlite_files_are_private(tmp_path, usual_umask):
    import sqlite3

    var = tmp_path / "var"
    secure_var_dir(var)
    assert mode(var) == 0o700
    db = sqlite3.connect(var / "portal.sqlite3")
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE seed (secret TEXT)")
        db.execute("INSERT INTO seed VALUES ('JBSWY3DPEHPK3PXP')")
        db.commit()
        files = {name: mode(var / name) for name in
                 ("portal.sqlite3", "portal.sqlite3-wal", "portal.sqlite3-shm")}
    finally:
        db.close()
    assert files == dict.fromkeys(files, 0o600)
    (var / "log").mkdir()
    (var / "log" / "portal.log").write_text("started\n")
    assert (mode(var / "log"), mode(var / "log" / "portal.log")) == (0o700, 0o600)


def test_an_older_install_readable_by_everyone_is_made_private_at_start(tmp_path, usual_umask):
    var = tmp_path / "var"
    for folder in ("log", "tls", "recordings", "assertion_keys", "demo"):
        (var / folder).mkdir(parents=True, mode=0o755)
    files = ["portal.sqlite3", "portal.sqlite3-wal", "portal.sqlite3-shm", "secret_key",
             "demo_secrets.json", "log/portal.log", "tls/server-key.pem", "tls/ca-key.pem",
             "demo/services.json"]
    for name in files:
        (var / name).write_text("x")
        (var / name).chmod(0o644)
    var.chmod(0o755)

    secure_var_dir(var)

    assert {name: mode(var / name) for name in files} == dict.fromkeys(files, 0o600)
    folders = ["", "log", "tls", "recordings", "assertion_keys", "demo"]
    assert {name: mode(var / name) for name in folders} == dict.fromkeys(folders, 0o700)


def test_a_generated_secret_key_is_never_readable_by_others(tmp_path, usual_umask, monkeypatch):
    var = tmp_path / "var"
    monkeypatch.setattr(config, "VAR_DIR", var)
    load_config({})
    assert (mode(var), mode(var / "secret_key")) == (0o700, 0o600)


_PORTAL_PROCESS = """
import json, os, sys
import django
django.setup()
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("CREATE TABLE seed (secret TEXT)")
    cursor.execute("INSERT INTO seed VALUES ('JBSWY3DPEHPK3PXP')")
    name = sys.argv[1]
    print(json.dumps({suffix: oct(os.stat(name + suffix).st_mode & 0o777)
                      for suffix in ("", "-wal", "-shm")}))
"""


def test_a_portal_process_started_with_a_loose_umask_writes_its_database_privately(tmp_path):
    db = tmp_path / "portal.sqlite3"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "DATABASE_URL": f"sqlite:///{db}"}
    result = subprocess.run([sys.executable, "-c", _PORTAL_PROCESS, str(db)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, umask=0o022, check=True)
    modes = json.loads(result.stdout.strip().splitlines()[-1])
    assert modes == {"": "0o600", "-wal": "0o600", "-shm": "0o600"}
    assert mode(ROOT / "var") == 0o700
