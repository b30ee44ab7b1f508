"""Start real upstream servers (echo, Datasette) and the portal itself on free ports."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from demo.web_app import command as datasette_command
from portal.server import HTTP_PROTOCOL

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["Server", "free_port", "portal_in_thread", "run_datasette", "run_echo", "tls_files"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen | None = None


def _wait_http(url: str, process: subprocess.Popen | None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1, verify=False)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def run_echo() -> Iterator[Server]:
    """The echo upstream under uvicorn, in its own process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.upstreams.echo:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"], cwd=ROOT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/hits", process)
        yield Server(f"http://127.0.0.1:{port}/", process)
    finally:
        _stop(process)


@contextmanager
def run_datasette(directory: Path, base_url: str) -> Iterator[Server]:
    """Datasette serving the notes database, in its own process."""
    port = free_port()
    process = subprocess.Popen(datasette_command(directory, port, base_url), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{port}{base_url}-/versions.json", process)
        yield Server(f"http://127.0.0.1:{port}{base_url}", process)
    finally:
        _stop(process)


def tls_files(directory: Path) -> tuple[Path, Path]:
    """A local CA and server certificate for 127.0.0.1/localhost (the demo's own maker)."""
    spec = importlib.util.spec_from_file_location("make_tls", ROOT / "scripts" / "make_tls.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    module.make(directory, ["localhost", "127.0.0.1", "::1"])
    return directory / "server-key.pem", directory / "server.pem"


@contextmanager
def portal_in_thread(tls_dir: Path) -> Iterator[str]:
    """The portal's real ASGI application under uvicorn (HTTPS) in a thread of this process,
    so it shares the test database and settings; yields its base URL."""
    from portal.asgi import application

    key, cert = tls_files(tls_dir)
    port = free_port()
    config = uvicorn.Config(application, http=HTTP_PROTOCOL, host="127.0.0.1", port=port,
                            ssl_keyfile=str(key),
                            ssl_certfile=str(cert), lifespan="on", log_level="warning",
                            access_log=False, proxy_headers=False, server_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="portal-under-test", daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/healthz", None)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
