"""A session host: keeps warm slots, runs what a session asks in one, wipes it afterwards.

Run as ``manage.py session_host`` (root: each slot drops to a user id of its own). The host
talks to the portal only through the database: it registers itself and its slots, the
portal assigns a ready slot to a session (:mod:`streaming.isolation.pool`), the host sees the
assignment, starts the session's program in the slot, and once the portal releases the slot
kills every process of the slot's user, removes its files and warms a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import secrets
import shutil
import signal
import socket
import string
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import close_old_connections, connection
from django.db.models import F
from django.utils import timezone

from streaming.desktop.vault import TargetSecret, seal
from streaming.isolation.bridges import Egress, serve_egress, serve_vnc_bridge
from streaming.isolation.models import SessionHost, Slot
from streaming.isolation.sandbox import (
    INIT_SCRIPT,
    LaunchError,
    SlotLayout,
    bwrap_argv,
    launch_script,
    passwd_line,
    prewarm_script,
)

__all__ = ["SessionHostRunner", "processes_of", "stop_processes_of"]

log = logging.getLogger(__name__)
_VNC_ALPHABET = string.ascii_letters + string.digits
_RETRY_SECONDS = 5.0  # a slot that failed to be made waits this long before the next try


def processes_of(uid: int) -> list[int]:
    """Every live process whose real user id is ``uid`` (a zombie is dead: it runs nothing and
    holds no memory, it only waits for whoever adopted it to reap it)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        try:
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                found.append(int(entry.name))
        except (KeyError, ValueError):
            continue
    return found


def stop_processes_of(uid: int, timeout: float = 5.0) -> bool:
    """SIGKILL every process of ``uid`` until none is left; True when none is."""
    deadline = time.monotonic() + timeout
    while True:
        pids = processes_of(uid)
        if not pids:
            return True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return not processes_of(uid)
        time.sleep(0.02)


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


class _Limits:
    """Memory and process limits per slot through cgroups (v2, else v1) when the host allows."""

    def __init__(self, name: str, memory_mb: int, pids_max: int) -> None:
        self.paths: list[Path] = []
        self.memory_mb, self.pids_max = memory_mb, pids_max
        unified = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        bases = ([("/sys/fs/cgroup", {"memory.max": f"{memory_mb}M", "pids.max": str(pids_max)})]
                 if unified else
                 [("/sys/fs/cgroup/memory", {"memory.limit_in_bytes": str(memory_mb * 1024 * 1024)}),
                  ("/sys/fs/cgroup/pids", {"pids.max": str(pids_max)})])
        for base, values in bases:
            path = Path(base) / "zt-portal" / name
            try:
                path.mkdir(parents=True, exist_ok=True)
                for key, value in values.items():
                    (path / key).write_text(value)
                self.paths.append(path)
            except OSError as exc:
                log.warning("slot %s: no cgroup limits under %s (%s); RLIMIT_NPROC only", name, base, exc)

    def enter(self) -> None:
        """In the child before exec: join the slot's cgroups, cap its processes."""
        for path in self.paths:
            with contextlib.suppress(OSError):
                (path / "cgroup.procs").write_text(str(os.getpid()))
        resource.setrlimit(resource.RLIMIT_NPROC, (self.pids_max, self.pids_max))

    def remove(self) -> None:
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.rmdir()


@dataclass
class _Running:
    """What the host holds for one slot while it lives."""

    index: int
    layout: SlotLayout
    process: subprocess.Popen[bytes]
    limits: _Limits
    servers: list[Any] = field(default_factory=list)
    egress: Egress | None = None


async def _spawn(argv: list[str], limits: _Limits) -> subprocess.Popen[bytes]:
    """Start a slot from the bridges' thread, which lives as long as the host: bubblewrap's
    --die-with-parent follows the thread that forked it, not the process."""
    return subprocess.Popen(argv, preexec_fn=limits.enter,  # noqa: S603 - our own argv, no shell
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


class SessionHostRunner:
    """One session host process: ``capacity`` slots on ``address``."""

    def __init__(self, name: str, capacity: int, *, slots_dir: Path, uid_base: int,
                 images: Mapping[str, Sequence[str]], address: str = "127.0.0.1",
                 memory_mb: int = 2048, pids_max: int = 512, geometry: tuple[int, int] = (1280, 800),
                 poll_seconds: float = 0.1, prewarm_browser: bool = False) -> None:
        self.name, self.capacity, self.address = name, capacity, address
        self.slots_dir, self.uid_base, self.images = slots_dir, uid_base, images
        self.memory_mb, self.pids_max, self.geometry = memory_mb, pids_max, geometry
        self.poll_seconds, self.prewarm_browser = poll_seconds, prewarm_browser
        self.running: dict[int, _Running] = {}
        self.wipe_seconds: list[float] = []
        self.warm_seconds: list[float] = []
        self._busy: set[int] = set()  # slots being wiped or warmed by a worker thread
        self._failed_at: dict[int, float] = {}  # when a slot last failed to be made
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, name=f"{name}-bridges",
                                             daemon=True)
        self.host: SessionHost | None = None

    # --- life of the host ---------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Register, warm every slot, then serve assignments until ``stop`` is set."""
        self._loop_thread.start()
        self.slots_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.chmod(self.slots_dir, 0o711)  # noqa: S103 - each slot's uid must traverse to its own 0700 dir
        self.host, _ = SessionHost.objects.update_or_create(name=self.name, defaults={
            "address": self.address, "capacity": self.capacity, "pid": os.getpid(),
            "started_at": timezone.now(), "heartbeat_at": timezone.now()})
        Slot.objects.filter(host=self.host).delete()
        for index in range(self.capacity):
            Slot.objects.create(host=self.host, index=index, state=Slot.State.WARMING)
            self._in_background(index, self._warm)
        beat = 0.0
        try:
            while not stop.is_set():
                close_old_connections()
                if time.monotonic() - beat > 1.0:
                    SessionHost.objects.filter(pk=self.host.pk).update(heartbeat_at=timezone.now())
                    beat = time.monotonic()
                self._tick()
                stop.wait(self.poll_seconds)
        finally:
            self.shutdown()
            connection.close()

    def shutdown(self) -> None:
        """Wipe every slot and leave the pool (no slot of a stopped host is ever assigned)."""
        if self.host is not None:
            SessionHost.objects.filter(pk=self.host.pk).delete()
        for index in list(self.running):
            self._wipe(index)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def _in_background(self, index: int, work: Any) -> None:
        with self._lock:
            if index in self._busy:
                return
            self._busy.add(index)

        def run() -> None:
            try:
                work(index)
            except Exception:
                log.exception("slot %s#%s failed", self.name, index)
                self._failed_at[index] = time.monotonic()  # not tried again at once: no tight loop
                Slot.objects.filter(host=self.host, index=index).update(state=Slot.State.FAILED)
            finally:
                connection.close()  # this thread ends: give its database connection back now
                with self._lock:
                    self._busy.discard(index)

        threading.Thread(target=run, name=f"{self.name}-slot-{index}", daemon=True).start()

    def _tick(self) -> None:
        assert self.host is not None
        for slot in Slot.objects.filter(host=self.host, state=Slot.State.ASSIGNED, launched=False):
            self._launch(slot)
        for slot in Slot.objects.filter(host=self.host, state__in=[Slot.State.RELEASED, Slot.State.FAILED]):
            if time.monotonic() - self._failed_at.get(slot.index, -_RETRY_SECONDS) < _RETRY_SECONDS:
                continue
            if Slot.objects.filter(pk=slot.pk, state=slot.state).update(state=Slot.State.WIPING):
                self._in_background(slot.index, self._renew)
        for index, running in list(self.running.items()):
            if running.process.poll() is not None and index not in self._busy:
                # The sandbox died on its own (a crash, the memory limit): start over.
                log.warning("slot %s#%s exited with %s", self.name, index, running.process.returncode)
                Slot.objects.filter(host=self.host, index=index).exclude(
                    state=Slot.State.WIPING).update(state=Slot.State.FAILED)

    # --- one slot -----------------------------------------------------------------------

    def _layout(self, index: int) -> SlotLayout:
        width, height = self.geometry
        return SlotLayout(self.slots_dir / str(index), self.uid_base + index, width, height)

    def _warm(self, index: int) -> None:
        started = time.monotonic()
        layout = self._layout(index)
        stop_processes_of(layout.uid)
        shutil.rmtree(layout.directory, ignore_errors=True)
        layout.directory.mkdir(mode=0o700)
        password = "".join(secrets.choice(_VNC_ALPHABET) for _ in range(8))  # VNC reads 8 characters
        files = {"init.sh": INIT_SCRIPT, "passwd": passwd_line(layout.uid), "vncpasswd": password + "\n"}
        if self.prewarm_browser:
            files["prewarm.sh"] = prewarm_script(layout)
        for name, text in files.items():
            path = layout.directory / name
            path.write_text(text)
            os.chown(path, layout.uid, layout.uid)
            os.chmod(path, 0o400)
        os.chown(layout.directory, layout.uid, layout.uid)
        limits = _Limits(f"{self.name}-{index}", self.memory_mb, self.pids_max)
        process = asyncio.run_coroutine_threadsafe(_spawn(bwrap_argv(layout), limits), self.loop).result(10)
        running = _Running(index, layout, process, limits)
        self.running[index] = running
        socket_path = layout.directory / "vnc.sock"
        deadline = time.monotonic() + 20
        while not socket_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"slot {index} did not start its VNC server")
            time.sleep(0.02)
        port = _free_port(self.address)
        server = asyncio.run_coroutine_threadsafe(
            serve_vnc_bridge(self.address, port, socket_path), self.loop).result(10)
        running.servers.append(server)
        Slot.objects.filter(host=self.host, index=index).update(
            state=Slot.State.READY, port=port, sealed_password=seal(TargetSecret(password=password)),
            session_id="", launch={}, launched=False, assigned_at=None, generation=F("generation") + 1)
        self.warm_seconds.append(time.monotonic() - started)

    def _launch(self, slot: Slot) -> None:
        running = self.running.get(slot.index)
        if running is None:
            return
        launch = dict(slot.launch)
        try:
            script = launch_script(launch, running.layout, self.images, prewarmed=self.prewarm_browser)
            if launch.get("kind") == "browser":
                host, _, port = str(launch["connect"]).rpartition(":")
                running.egress = Egress(str(launch["authority"]).lower(), host, int(port))
                server = asyncio.run_coroutine_threadsafe(serve_egress(
                    running.layout.directory / "egress.sock", running.egress, running.layout.uid),
                    self.loop).result(10)
                running.servers.append(server)
        except (LaunchError, KeyError, ValueError) as exc:
            log.error("slot %s#%s cannot run %r: %s", self.name, slot.index, launch.get("kind"), exc)
            script = "xterm -e sh -c 'echo This session could not start. Tell IT.; sleep 3600' &\n"
        target = running.layout.directory / "launch.sh"
        staging = running.layout.directory / ".launch.sh"
        staging.write_text(script)
        os.chown(staging, running.layout.uid, running.layout.uid)
        os.chmod(staging, 0o400)
        staging.rename(target)  # the slot sees the whole script or none of it
        Slot.objects.filter(pk=slot.pk).update(launched=True)

    def _wipe(self, index: int) -> None:
        started = time.monotonic()
        running = self.running.pop(index, None)
        layout = running.layout if running else self._layout(index)
        if running is not None:
            for server in running.servers:
                self.loop.call_soon_threadsafe(server.close)
            if running.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.process.pid, signal.SIGKILL)
            stop_processes_of(layout.uid)
            running.process.wait(timeout=10)
            running.limits.remove()
        else:
            stop_processes_of(layout.uid)
        shutil.rmtree(layout.directory, ignore_errors=True)
        self.wipe_seconds.append(time.monotonic() - started)

    def _renew(self, index: int) -> None:
        self._wipe(index)
        self._warm(index)
