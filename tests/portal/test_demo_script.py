"""`make demo` from a fresh checkout: private var/, a portal log file, and Ctrl-C ends it cleanly.

The demo runs from a copy of the working tree with an empty ``var/`` (the code finds ``var/``
next to itself), so a developer's own demo and its data are never touched.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import require_binary
from tests.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def _fresh_checkout(target: Path) -> Path:
    """The source files as they are in the working tree (git-ignored ones aside), venv and node_modules linked."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    for linked in (".venv", "node_modules"):
        (target / linked).symlink_to(ROOT / linked)
    return target


def _read_until(fd: int, text: bytes, seen: bytearray, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the terminal closed: the demo is gone
                return text in seen
            if not chunk:
                return text in seen
            seen += chunk
    return text in seen


def _status(url: str, cafile: Path, host: str | None = None) -> int:
    context = ssl.create_default_context(cafile=str(cafile))
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_a_fresh_demo_keeps_var_private_logs_to_a_file_and_ends_cleanly_on_ctrl_c(tmp_path):
    for program in ("guacd", "x11vnc", "Xvfb", "sshd"):
        require_binary(program)
    checkout = _fresh_checkout(tmp_path / "portal")
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PORTAL_SECRET_KEY"}}
    env["PORT"] = str(port)
    pid, terminal = pty.fork()
    if pid == 0:  # the demo, in a terminal of its own, as a person starts it
        os.chdir(checkout)
        os.execve(str(checkout / "scripts" / "demo.sh"), ["demo.sh"], env)
    output = bytearray()
    try:
        assert _read_until(terminal, b"(Ctrl-C stops)", output, 240), output.decode(errors="replace")
        assert b"PORT=" in output  # says how to choose another port
        var = checkout / "var"
        base = f"https://127.0.0.1:{port}"
        assert _status(base + "/accounts/login/", var / "tls" / "ca.pem") == 200
        assert _status(base + "/accounts/login/", var / "tls" / "ca.pem", host="evil.example") == 400

        os.write(terminal, b"\x03")  # Ctrl-C
        assert _read_until(terminal, b"Demo stopped.", output, 60), output.decode(errors="replace")
        _read_until(terminal, b"never printed", output, 2)
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0

        log = (var / "log" / "portal.log").read_text()
        assert "evil.example" in log  # the portal's own log lines, not only the terminal's
        readable = sorted(str(p.relative_to(var)) for p in [var, *var.rglob("*")]
                          if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077)
        assert readable == []
        assert _status_or_refused(base + "/healthz", var / "tls" / "ca.pem") == "refused"
    finally:
        if pid:
            os.killpg(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        os.close(terminal)


def _status_or_refused(url: str, cafile: Path) -> int | str:
    try:
        return _status(url, cafile)
    except urllib.error.URLError:
        return "refused"
