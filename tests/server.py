"""Run the real portal (uvicorn, HTTPS, the ASGI app) in a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

from portal.server import HTTP_PROTOCOL

ROOT = Path(__file__).resolve().parent.parent
TLS_DIR = ROOT / "var" / "tls"

__all__ = ["database_url_of_test_db", "free_port", "run_portal"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url_of_test_db() -> str:
    """A DATABASE_URL for the database the test run uses (so the server sees the same rows)."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    user = s.get("USER") or "postgres"
    return f"postgres://{user}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


def _ensure_tls() -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tls.py"), str(TLS_DIR)], check=True,
                   capture_output=True)


@contextmanager
def run_portal(env: dict[str, str] | None = None, *, wait_ready: bool = True) -> Iterator[str]:
    """Start the portal on a free port; yield its base URL (https://127.0.0.1:PORT)."""
    _ensure_tls()
    port = free_port()
    # Path mode unless a test asks for app origins (as the in-process tests, tests/conftest.py).
    full_env = {**os.environ, "PORTAL_ALLOWED_HOSTS": "127.0.0.1,localhost", "PORTAL_APPS_DOMAIN": "",
                "DATABASE_URL": database_url_of_test_db(), **(env or {})}
    log = open(ROOT / "var" / f"portal-test-{port}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "uvicorn"), "portal.asgi:application",
         "--http", HTTP_PROTOCOL, "--host", "127.0.0.1",
         "--port", str(port), "--ssl-keyfile", str(TLS_DIR / "server-key.pem"),
         "--ssl-certfile", str(TLS_DIR / "server.pem"), "--no-proxy-headers", "--log-level", "warning"],
        cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(TLS_DIR / "ca.pem"))
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"portal exited: {(ROOT / 'var' / f'portal-test-{port}.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/healthz", context=context, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
