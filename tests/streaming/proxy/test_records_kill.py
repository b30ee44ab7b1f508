"""A real portal killed with SIGKILL under load keeps every record older than half a second.

Runs ``bench/records_kill.py`` (a portal process of its own on a database of its own: a SQLite
file, or a fresh PostgreSQL database when DATABASE_URL points at one), with the access-record
table's write lock held by another connection while the portal is loaded, so the records can
only survive through the journal: without it every one of them is lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]



def _kill_round(*args: str) -> dict:
    out = subprocess.run([sys.executable, "bench/records_kill.py", "--json", "--connections", "6",
                          "--seconds", "2", *args], cwd=ROOT, env=dict(os.environ), capture_output=True,
                         text=True, timeout=170)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])[0]


def test_a_portal_killed_while_its_database_is_stuck_loses_only_the_last_half_second_of_records():
    run = _kill_round("--stall")
    assert run["answered"] > 100, run  # it was under load
    assert run["recorded"] > 0, run  # written by the restarted portal, from the dead one's journal
    assert run["oldest_missing_age"] <= 0.5, run
