"""A real session host (bubblewrap slots with Xvfb and x11vnc) in a thread of the test process."""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streaming.isolation.host import SessionHostRunner
from streaming.isolation.models import Slot
from tests.conftest import require, require_binary

PROBE = ("import os, socket, sys\n"
         "out = open('/run/slot/probe.txt', 'w')\n"
         "out.write(f'uid={os.getuid()}\\n')\n"
         "for path in sys.argv[1:]:\n"
         "    try:\n"
         "        open(path).read(); out.write(f'READ {path}\\n')\n"
         "    except OSError as exc:\n"
         "        out.write(f'refused {path}: {exc.__class__.__name__}\\n')\n"
         "for port in (5432, 6379):\n"
         "    try:\n"
         "        socket.create_connection(('127.0.0.1', port), timeout=1); out.write(f'CONNECTED {port}\\n')\n"
         "    except OSError as exc:\n"
         "        out.write(f'no network {port}: {exc.__class__.__name__}\\n')\n"
         "out.close()\n")


def wait_for(check: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def session_host(transactional_db, settings) -> Iterator[SessionHostRunner]:
    require(os.geteuid() == 0, "root (a session host drops each slot to a user id of its own)")
    for program in ("bwrap", "Xvfb", "x11vnc", "matchbox-window-manager", "setpriv", "xterm"):
        require_binary(program)
    name = f"test-{secrets.token_hex(3)}"
    slots_dir = Path("/run/zt-portal-test") / name
    slots_dir.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(slots_dir.parent, 0o711)
    secret_files = [str(Path(settings.BASE_DIR) / "manage.py"), "/etc/shadow"]
    images = {
        "probe": ["python3", "-c", PROBE, *secret_files],
        "terminal": settings.PORTAL_SESSION_IMAGES["terminal"],
    }
    runner = SessionHostRunner(name, 2, slots_dir=slots_dir, uid_base=62000 + secrets.randbelow(50) * 10,
                               images=images, memory_mb=1024, poll_seconds=0.05, prewarm_browser=True)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: Slot.objects.filter(host__name=name, state=Slot.State.READY).count() == 2, 30,
             "two warm slots")
    yield runner
    stop.set()
    thread.join(timeout=30)
    shutil.rmtree(slots_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def app_upstream():
    from tests.upstreams.launch import run_echo

    with run_echo() as server:
        yield server


@pytest.fixture
def isolation_settings(settings, guacd, tmp_path, live_portal):
    settings.GUACD_HOST = guacd.host
    settings.GUACD_PORT = guacd.port
    settings.PORTAL_RECORDINGS_DIR = tmp_path / "recordings"
    settings.PORTAL_APPS_DOMAIN = "apps.localhost"
    settings.PORTAL_URL = live_portal.url
    return settings
