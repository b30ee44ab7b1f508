"""Demo and test targets on free loopback ports: guacd, an X desktop behind x11vnc, OpenSSH,
and an X desktop behind FreeRDP's shadow server.

The test fixtures (tests/fixtures/targets.py) and ``scripts/demo_services.py`` (used by
``make demo``) start the same processes the same way. Everything listens on 127.0.0.1 only:
the targets are meant to be reachable from guacd on this machine, never from a browser.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEMO_ACCOUNT",
    "GuacdProcess",
    "RdpTarget",
    "SshTarget",
    "TargetError",
    "VncTarget",
    "find_program",
    "free_port",
    "start_guacd",
    "start_rdp_target",
    "start_ssh_target",
    "start_vnc_target",
    "wait_for_port",
]

DEMO_ACCOUNT = "portal-demo"
_LOOPBACK = "127.0.0.1"
_CLOCK = 'while :; do printf "\\r%s " "$(date "+%F %T")"; sleep 0.5; done'


class TargetError(RuntimeError):
    """A demo target could not be started (the message says which and why)."""


def find_program(name: str) -> str | None:
    """The program's path on PATH or in /usr/sbin (guacd and sshd live there)."""
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((_LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 10.0) -> None:
    """Block until ``port`` accepts connections, or fail with the process's own output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TargetError(f"{what} exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((_LOOPBACK, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TargetError(f"{what} did not listen on {_LOOPBACK}:{port} within {timeout} s")


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
    for process in reversed(processes):
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class _Running:
    """What every started service offers: where it listens, and a way to stop it."""

    host: str
    port: int
    processes: list[subprocess.Popen]

    @property
    def upstream(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        _stop(self.processes)


@dataclass
class GuacdProcess(_Running):
    """A guacd listening on loopback."""

    host: str
    port: int
    log_path: Path
    processes: list[subprocess.Popen] = field(default_factory=list, repr=False)


@dataclass
class VncTarget(_Running):
    """An Xvfb display with an xterm, served by x11vnc with a password."""

    host: str
    port: int
    display: str
    password: str = field(repr=False)
    processes: list[subprocess.Popen] = field(default_factory=list, repr=False)


@dataclass
class SshTarget(_Running):
    """An sshd of our own (config, host keys, port) with a demo account that has a password."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    home: Path
    processes: list[subprocess.Popen] = field(default_factory=list, repr=False)


@dataclass
class RdpTarget(_Running):
    """An Xvfb display with an xterm, shared over RDP by FreeRDP's shadow server; the RDP login
    is checked through PAM against a unix account (the desktop itself is the shared display)."""

    host: str
    port: int
    display: str
    username: str
    password: str = field(repr=False)
    log_path: Path
    processes: list[subprocess.Popen] = field(default_factory=list, repr=False)


def _require(name: str) -> str:
    path = find_program(name)
    if path is None:
        raise TargetError(f"the program {name!r} is not installed")
    return path


def start_guacd(workdir: Path, *, port: int | None = None,
                tls: tuple[Path, Path] | None = None) -> GuacdProcess:
    """Start ``guacd -f`` on a free loopback port, logging into ``workdir``; with ``tls``
    (certificate, key: PEM files) it accepts TLS connections only (``-C``/``-K``)."""
    guacd = _require("guacd")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "guacd.log"
    log = log_path.open("ab")
    tls_args = ["-C", str(tls[0]), "-K", str(tls[1])] if tls else []
    process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        [guacd, "-f", "-b", _LOOPBACK, "-l", str(port), "-L", "info", *tls_args],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    log.close()
    handle = GuacdProcess(_LOOPBACK, port, log_path, [process])
    try:
        wait_for_port(port, process, "guacd")
    except TargetError:
        handle.stop()
        raise
    return handle


def _start_desktop(workdir: Path, geometry: str, xterm: str, processes: list[subprocess.Popen], *,
                   command: tuple[str, ...] = ()) -> tuple[str, dict[str, str]]:
    """An Xvfb display with the demo xterm on it (running ``command`` if given); the started
    processes join ``processes``. Returns the display and the environment that targets it."""
    xvfb, display = _start_xvfb(workdir, geometry)
    processes.append(xvfb)
    env = {**os.environ, "DISPLAY": display}
    processes.append(subprocess.Popen(  # noqa: S603
        [xterm, "-geometry", "100x30+10+10", "-bg", "#103050", "-fg", "#f0f0f0",
         "-title", "demo desktop", *(("-e", *command) if command else ())],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    ))
    return display, env


def _start_xvfb(workdir: Path, geometry: str) -> tuple[subprocess.Popen, str]:
    xvfb = _require("Xvfb")
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(  # noqa: S603
        [xvfb, "-displayfd", str(write_fd), "-screen", "0", geometry, "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=(workdir / "xvfb.log").open("ab"),
        stdin=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        _stop([process])
        raise TargetError("Xvfb did not report a display number")
    return process, f":{number}"


def start_vnc_target(workdir: Path, *, password: str | None = None,
                     geometry: str = "1024x768x24") -> VncTarget:
    """Xvfb + an xterm + x11vnc on a free loopback port, protected by a VNC password."""
    x11vnc, xterm = _require("x11vnc"), _require("xterm")
    workdir.mkdir(parents=True, exist_ok=True)
    password = password or secrets.token_urlsafe(6)[:8]  # VNC passwords are 8 characters at most
    passwd_file = workdir / "vncpasswd"
    subprocess.run(  # noqa: S603
        [x11vnc, "-storepasswd", password, str(passwd_file)], check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    processes: list[subprocess.Popen] = []
    try:
        display, env = _start_desktop(workdir, geometry, xterm, processes)
        port = free_port()
        vnc = subprocess.Popen(  # noqa: S603
            [x11vnc, "-display", display, "-localhost", "-rfbport", str(port), "-forever",
             "-shared", "-rfbauth", str(passwd_file), "-noxdamage", "-quiet", "-nopw"],
            env=env, stdout=subprocess.DEVNULL, stderr=(workdir / "x11vnc.log").open("ab"),
            stdin=subprocess.DEVNULL,
        )
        processes.append(vnc)
        wait_for_port(port, vnc, "x11vnc")
    except BaseException:
        _stop(processes)
        raise
    return VncTarget(_LOOPBACK, port, display, password, processes)


def _ensure_account(username: str, password: str) -> Path:
    """Create the unix demo account when missing and (re)set its password."""
    try:
        import pwd

        home = Path(pwd.getpwnam(username).pw_dir)
    except KeyError:
        if os.geteuid() != 0:
            raise TargetError(f"the account {username!r} is missing and only root may create it") from None
        subprocess.run([_require("useradd"), "--create-home", "--shell", "/bin/bash", username],  # noqa: S603
                       check=True, stdout=subprocess.DEVNULL)
        import pwd

        home = Path(pwd.getpwnam(username).pw_dir)
    if os.geteuid() == 0:
        subprocess.run([_require("chpasswd")], input=f"{username}:{password}\n".encode(),  # noqa: S603
                       check=True)
    return home


def start_ssh_target(workdir: Path, *, username: str = DEMO_ACCOUNT,
                     password: str | None = None) -> SshTarget:
    """An sshd with its own host key and config on a free loopback port, password login on."""
    sshd, keygen = _require("sshd"), _require("ssh-keygen")
    workdir.mkdir(parents=True, exist_ok=True)
    password = password or secrets.token_urlsafe(18)
    home = _ensure_account(username, password)
    host_key = workdir / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],  # noqa: S603
                       check=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}",
        f"ListenAddress {_LOOPBACK}",
        f"HostKey {host_key}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AllowUsers {username}",
        "PasswordAuthentication yes",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin no",
        "UsePAM no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "PrintMotd no",
        "Subsystem sftp internal-sftp",  # a tier that allows file transfer uses guacd's SFTP
        "LogLevel INFO",
        "",
    ]))
    process = subprocess.Popen(  # noqa: S603
        [sshd, "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL, stderr=(workdir / "sshd.log").open("ab"), stdin=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, "sshd")
    except TargetError:
        _stop([process])
        raise
    return SshTarget(_LOOPBACK, port, username, password, home, [process])


def start_rdp_target(workdir: Path, *, username: str = DEMO_ACCOUNT, password: str | None = None,
                     geometry: str = "1024x768x24") -> RdpTarget:
    """Xvfb + an xterm + ``freerdp-shadow-cli`` on a free loopback port, logins checked by PAM.

    The shadow server checks the RDP username and password with PAM (``pam_authenticate`` on
    the first of lightdm/gdm/xdm/login/sshd found in /etc/pam.d), so they are the unix account's
    own, set here as for the SSH target: a target sharing the account with an SSH target must
    be given the same password. PAM checks another account's password only when the server
    runs as root. NLA is off because the server skips PAM on an NLA connection (NLA checks an
    NTLM SAM file instead). PAM is asked once the connection is active, so a refused login
    reaches guacd as a dropped connection, after PAM's failure delay (3 s in Debian's
    /etc/pam.d/login), and guacd 1.3 reports only "Aborted. See logs." (status 520).
    """
    shadow, xterm = _require("freerdp-shadow-cli"), _require("xterm")
    if os.geteuid() != 0:
        raise TargetError("the RDP target checks logins with PAM, which reads another account's "
                          "password only as root")
    workdir.mkdir(parents=True, exist_ok=True)
    password = password or secrets.token_urlsafe(18)
    _ensure_account(username, password)
    processes: list[subprocess.Popen] = []
    try:
        # The shadow server sends a client frames only when its screen grab sees a change, so
        # on a still screen a new connection would wait forever for its first frame: a clock
        # that ticks twice a second gets each one the whole desktop within half a second.
        display, env = _start_desktop(workdir, geometry, xterm, processes,
                                      command=("/bin/sh", "-c", _CLOCK))
        port = free_port()
        log_path = workdir / "freerdp-shadow.log"
        log = log_path.open("ab")  # FreeRDP logs to stdout
        # The server makes its self-signed TLS certificate under $XDG_CONFIG_HOME/freerdp/shadow.
        server = subprocess.Popen(  # noqa: S603
            [shadow, f"/port:{port}", f"/bind-address:{_LOOPBACK}", "+auth", "-sec-nla"],
            env={**env, "XDG_CONFIG_HOME": str(workdir / "config")},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        processes.append(server)
        wait_for_port(port, server, "freerdp-shadow-cli")
    except BaseException:
        _stop(processes)
        raise
    return RdpTarget(_LOOPBACK, port, display, username, password, log_path, processes)


@contextlib.contextmanager
def running(target: GuacdProcess | VncTarget | SshTarget | RdpTarget,
            ) -> Iterator[GuacdProcess | VncTarget | SshTarget | RdpTarget]:
    """Stop ``target``'s processes when the block ends, however it ends."""
    try:
        yield target
    finally:
        target.stop()
