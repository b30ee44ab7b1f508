"""Direct guacd vs the portal's desktop tunnel: throughput, round trips and memory per session.

    .venv/bin/python bench/tunnel.py [--seconds 10] [--sessions 100]

One run starts everything it measures on loopback and stops it again: guacd, an Xvfb desktop
served by x11vnc (``demo.targets``), and the portal (uvicorn, one worker,
``portal.asgi:application`` over plain HTTP with 127.0.0.1 trusted for X-Forwarded-Proto, as
behind a TLS balancer) on a fresh SQLite database in a temp directory. A bench user signs in
through the real forms (password, then a TOTP code from a confirmed device); each tunnel
session is opened through the real ``/desktop/<slug>/`` page and its one-time ticket, and read
by a WebSocket client with subprotocol ``guacamole`` that behaves like guacamole-common-js:
it parses every instruction, answers every ``sync`` at once, sends one instruction per
message, and offers permessage-deflate as browsers do. The baseline is a plain Guacamole
client on a TCP socket to guacd, doing the same handshake with the project's code
(``open_guacd``) and the same connection parameters.

1. Throughput, guacd -> client: the direct client and two tunnel clients (with and without
   permessage-deflate) read the same desktop at the same time while an xterm on it lists
   /usr without pause. Client -> guacd: each client in turn sends ``nop`` as fast as its
   transport accepts, in windows closed by a ``file`` -> ``ack`` round trip, which proves
   guacd has handled everything before it (a connection's instructions are handled in order).
2. Latency: the relay's own round trip (the browser's internal ``0.,4.ping,<ts>;``, answered
   by the relay); one way guacd -> client, from the timestamp in guacd's ``sync`` (guacd's
   CLOCK_MONOTONIC, in ms) to the client handling it; and ``file,<stream>,text/plain,<name>``
   -> ``ack`` through guacd (a VNC connection without SFTP refuses it; the bench tier allows
   file transfer so the relay forwards it). guacd 1.3 sends that ack only with its next
   frame, so this round trip shows guacd's frame pacing, not the relay: it is printed, and
   the added latency is read from the first two.
3. Memory: the portal process's VmRSS before and with N tunnels open to the desktop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

SLUG = "bench-desktop"
USERNAME = "bench-desktop-user"
SCREEN = (1024, 768, 96)
WINDOW = 5000  # client -> guacd: instructions in flight at most
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes --------------------------------------------------------------------------------

_T0 = time.monotonic()


def _progress(what: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f} s] {what}", file=sys.stderr, flush=True)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Watched:
    """Processes whose CPU time is reported per phase (guacd counts with its children)."""

    pids: dict[str, int]

    def cpu(self) -> dict[str, float]:
        out = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        if "guacd" in self.pids:
            out["guacd"] += sum(_cpu_seconds(c) for c in _children(self.pids["guacd"]))
        out["client"] = time.process_time()
        return out


def _cpu_line(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    return "  ".join(f"{name} {100 * (after[name] - before.get(name, 0.0)) / seconds:.0f}%"
                     for name in after)


# -- a Guacamole client, direct or through the tunnel -----------------------------------------

@dataclass
class Tally:
    bytes: int = 0
    instructions: int = 0
    frames: int = 0


class GuacClient:
    """What guacamole-common-js does with a stream: parse it all, answer each sync at once."""

    name = "client"

    def __init__(self) -> None:
        self.received = Tally()
        self.sent = Tally()
        self.waiter: tuple[Callable[[str, tuple[str, ...]], bool], asyncio.Future] | None = None
        self.first_sync = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.error = ""
        self.delays: list[float] | None = None  # guacd's sync timestamp -> handled here, seconds

    async def send(self, text: str, count: int = 1) -> None:
        self.sent.bytes += len(text.encode())
        self.sent.instructions += count
        await self._write(text)

    async def _write(self, text: str) -> None:
        raise NotImplementedError

    def _handle(self, opcode: str, args: tuple[str, ...]) -> str | None:
        """Count one instruction; the reply it needs (a sync), if any."""
        self.received.instructions += 1
        if self.waiter is not None and self.waiter[0](opcode, args):
            future = self.waiter[1]
            self.waiter = None
            if not future.done():
                future.set_result(time.perf_counter())
        if opcode == "sync":
            if self.delays is not None:
                self.delays.append(time.monotonic() - int(args[0]) / 1000)  # guacd: CLOCK_MONOTONIC ms
            self.received.frames += 1
            self.first_sync.set()
            return f"4.sync,{len(args[0])}.{args[0]};"
        if opcode == "error":
            self.error = args[0] if args else "error"
        return None

    async def round_trip(self, text: str, match: Callable[[str, tuple[str, ...]], bool],
                         timeout: float = 10.0) -> float:
        """Seconds from sending ``text`` until an instruction matching ``match`` arrives."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.waiter = (match, future)
        started = time.perf_counter()
        await self.send(text)
        done = await asyncio.wait_for(future, timeout)
        return done - started

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class DirectClient(GuacClient):
    """A Guacamole client on a TCP socket to guacd (the project's handshake, then raw reads)."""

    name = "direct"

    def __init__(self, connection: Any) -> None:
        super().__init__()
        self.connection = connection
        self.handshake_bytes = 0

    @classmethod
    async def open(cls, host: str, port: int, parameters: dict[str, str]) -> DirectClient:
        from streaming.desktop.guacamole.guacd import Screen, open_guacd

        connection = await open_guacd(host, port, protocol="vnc", parameters=parameters,
                                      screen=Screen(*SCREEN))
        client = cls(connection)
        client.handshake_bytes = connection.bytes_in  # count what comes after the handshake
        return client

    async def _write(self, text: str) -> None:
        await self.connection.write_text(text)

    async def _run(self) -> None:
        connection = self.connection
        try:
            while (instruction := await connection.receive()) is not None:
                self.received.bytes = connection.bytes_in - self.handshake_bytes
                reply = self._handle(instruction.opcode, instruction.args)
                if reply:
                    await self.send(reply)
        except (ConnectionError, OSError) as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.connection.close()


class TunnelClient(GuacClient):
    """The browser's side of the portal's WebSocket tunnel."""

    name = "tunnel"

    def __init__(self, websocket: Any, session_id: str) -> None:
        super().__init__()
        from streaming.desktop.guacamole.protocol import GUACD_LIMITS, InstructionReader

        self.websocket = websocket
        self.session_id = session_id
        self.reader = InstructionReader(GUACD_LIMITS)
        self.split_messages = 0

    @classmethod
    async def open(cls, portal: PortalUser, *, deflate: bool = True) -> TunnelClient:
        from websockets.asyncio.client import connect

        session_id, tunnel, ticket = await portal.open_page()
        width, height, dpi = SCREEN
        websocket = await connect(
            f"ws://127.0.0.1:{portal.port}{tunnel}?ticket={ticket}&width={width}&height={height}&dpi={dpi}",
            subprotocols=["guacamole"], additional_headers=portal.headers(websocket=True),
            max_size=None, ping_interval=None, open_timeout=20, compression="deflate" if deflate else None)
        assert websocket.subprotocol == "guacamole", websocket.subprotocol
        client = cls(websocket, session_id)
        if not deflate:
            client.name = "tunnel, no deflate"
        return client

    async def _write(self, text: str) -> None:
        await self.websocket.send(text)

    async def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        reader = self.reader
        try:
            async for message in self.websocket:
                self.received.bytes += len(message.encode())
                reader.feed_text(message)
                if reader.pending:
                    self.split_messages += 1  # guacamole-common-js would close the tunnel
                replies = []
                while (instruction := reader.pop()) is not None:
                    reply = self._handle(instruction.opcode, instruction.args)
                    if reply:
                        replies.append(reply)
                for reply in replies:  # one instruction per message, like the browser
                    await self.send(reply)
        except ConnectionClosed as exc:
            self.error = self.error or f"closed: {exc}"

    async def close(self) -> None:
        await self.websocket.close()
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self.task.cancel()


# -- the portal, as a signed-in browser sees it ----------------------------------------------

class PortalUser:
    """A browser session on the portal: cookies kept by hand (they are Secure, over plain HTTP)."""

    def __init__(self, port: int) -> None:
        import httpx

        self.port = port
        self.origin = f"https://127.0.0.1:{port}"
        self.cookies: dict[str, str] = {}
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def headers(self, *, websocket: bool = False) -> dict[str, str]:
        headers = {"X-Forwarded-Proto": "https", "Origin": self.origin}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, headers={**self.headers(),
                                                                  "Referer": self.origin + path}, **kwargs)
        for header in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            self.cookies.update({name: morsel.value for name, morsel in jar.items()})
        self.http.cookies.clear()
        return response

    async def _post_form(self, path: str, fields: dict[str, str]) -> Any:
        page = await self._request("GET", path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, f"no CSRF token on {path} ({page.status_code})"
        response = await self._request("POST", path, data={**fields, "csrfmiddlewaretoken": token[1]})
        assert response.status_code == 302, (path, response.status_code, response.text[:300])
        return response

    async def sign_in(self, password: str, totp_code: Callable[[], str]) -> None:
        await self._post_form("/accounts/login/", {"username": USERNAME, "password": password})
        await self._post_form("/accounts/mfa/verify/", {"otp_token": totp_code()})

    async def open_page(self) -> tuple[str, str, str]:
        """GET the desktop page: the session id, tunnel path and one-time ticket it hands out."""
        response = await self._request("GET", f"/desktop/{SLUG}/")
        assert response.status_code == 200, (response.status_code, response.text[:300])
        tunnel = re.search(r'data-tunnel="([^"]+)"', response.text)[1]
        ticket = re.search(r'data-ticket="([^"]+)"', response.text)[1]
        return tunnel.strip("/").split("/")[-1], tunnel, ticket


# -- set-up -----------------------------------------------------------------------------------

def _prepare_database(vnc: Any, password: str) -> Callable[[], str]:
    """User, TOTP device, tier, resource and vaulted VNC password in the bench database."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connections
    from django_otp.oath import TOTP
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from portal.accounts.roles import ensure_roles
    from streaming.desktop import vault
    from tiers.models import Resource, Tier

    groups = ensure_roles()
    user = get_user_model().objects.create_user(USERNAME, f"{USERNAME}@example.com", password)
    user.groups.add(groups["employee"])
    device = TOTPDevice.objects.create(user=user, name="Bench authenticator", confirmed=True)
    tier = Tier.objects.create(
        name="bench-stream", rank=20, access_mode="stream", mfa_read=None, mfa_write=None,
        mfa_sensitive=None, recording=False, file_transfer="allow", idle_seconds=3600,
        reauth_interval_seconds=30)
    resource = Resource.objects.create(slug=SLUG, name="Bench desktop", kind="vnc", upstream=vnc.upstream,
                                       tier=tier)
    resource.allowed_groups.add(groups["employee"])
    vault.store(resource, vault.TargetSecret(password=vnc.password))
    connections.close_all()

    def code() -> str:
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
        return f"{totp.token():0{device.digits}d}"

    return code


def _direct_parameters(session_id: str) -> dict[str, str]:
    """The parameters the portal sends guacd for this very session (same obligations, same vault)."""
    from streaming.desktop.broker import handshake_parameters
    from streaming.desktop.models import StreamSession

    stream = StreamSession.objects.select_related("resource").get(pk=session_id)
    assert stream.obligations.get("file_transfer") == "allow", stream.obligations
    return handshake_parameters(stream)


def _wait_http(port: int, process: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the portal exited ({process.returncode}):\n{log.read_text()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Forwarded-Proto": "https"}, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"the portal never answered:\n{log.read_text()[-2000:]}")


def _start_churn(display: str, workdir: Path) -> subprocess.Popen:
    """An xterm that never stops scrolling: a steady stream of screen changes."""
    return subprocess.Popen(
        ["xterm", "-geometry", "120x45+0+0", "-bg", "#103050", "-fg", "#f0f0f0", "-e", "sh", "-c",
         "while :; do ls -lR /usr; done"],
        env={**os.environ, "DISPLAY": display}, stdout=subprocess.DEVNULL,
        stderr=(workdir / "churn.log").open("ab"), stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


# -- measurements -----------------------------------------------------------------------------

def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def _file_rt(client: GuacClient, stream: str = "7") -> Any:
    text = f"4.file,{len(stream)}.{stream},10.text/plain,9.bench.txt;"
    return client.round_trip(text, lambda op, args: op == "ack" and bool(args) and args[0] == stream)


async def _ping_rt(client: GuacClient) -> float:
    stamp = str(int(time.time() * 1000))
    return await client.round_trip(f"0.,4.ping,{len(stamp)}.{stamp};",
                                   lambda op, args: op == "" and args == ("ping", stamp))


async def _downstream(clients: list[GuacClient], seconds: float, watched: Watched) -> dict[str, Any]:
    before = {c.name: (c.received.bytes, c.received.instructions, c.received.frames,
                       c.sent.bytes, c.sent.instructions) for c in clients}
    cpu = watched.cpu()
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    cpu_line = _cpu_line(cpu, watched.cpu(), elapsed)
    rates = {}
    for c in clients:
        b = before[c.name]
        rates[c.name] = {
            "in_bytes": (c.received.bytes - b[0]) / elapsed,
            "in_ins": (c.received.instructions - b[1]) / elapsed,
            "frames": (c.received.frames - b[2]) / elapsed,
            "out_bytes": (c.sent.bytes - b[3]) / elapsed, "out_ins": (c.sent.instructions - b[4]) / elapsed}
    return {"rates": rates, "cpu": cpu_line}


async def _upstream(client: GuacClient, seconds: float, watched: Watched) -> dict[str, float]:
    """``nop``s as fast as the transport takes them, WINDOW at a time, each window closed by guacd.

    guacd handles a connection's instructions in order, so the ack that ends a window means
    every ``nop`` before it was handled: at most WINDOW are in flight, and nothing still in a
    socket buffer is counted. guacd only flushes its ack with its next frame, so a mouse move
    (which redraws the cursor) goes before the ``file`` to make that frame come at once.
    """
    sent_bytes, sent = client.sent.bytes, client.sent.instructions
    cpu = watched.cpu()
    started = time.perf_counter()
    deadline = started + seconds
    windows = 0
    while time.perf_counter() < deadline:
        for _ in range(WINDOW):
            await client.send("3.nop;")
        windows += 1
        await client.send(f"5.mouse,3.{400 + windows % 2},3.400,1.0;")
        await _file_rt(client, "8")
    elapsed = time.perf_counter() - started
    return {"out_bytes": (client.sent.bytes - sent_bytes) / elapsed,
            "out_ins": (client.sent.instructions - sent) / elapsed,
            "cpu": _cpu_line(cpu, watched.cpu(), elapsed)}


async def _round_trips(direct: GuacClient, tunnel: TunnelClient, rounds: int) -> dict[str, list[float]]:
    """file -> ack, direct and tunnel alternating (after a short warm-up)."""
    samples: dict[str, list[float]] = {"direct": [], "tunnel": []}
    for i in range(rounds + 5):
        for client in (direct, tunnel):
            took = await _file_rt(client)
            if i >= 5:
                samples[client.name].append(took)
    return samples


async def _pings(tunnel: TunnelClient, rounds: int) -> list[float]:
    for _ in range(50):
        await _ping_rt(tunnel)
    return [await _ping_rt(tunnel) for _ in range(rounds)]


async def _open_many(portal: PortalUser, count: int, budget: float) -> tuple[list[TunnelClient], str]:
    """Up to ``count`` sessions, eight opening at a time, then each one's first frame, in ``budget`` s."""
    opened: list[TunnelClient] = []
    deadline = time.monotonic() + budget
    failure = ""
    gate = asyncio.Semaphore(8)

    async def one() -> None:
        nonlocal failure
        async with gate:
            if time.monotonic() > deadline or failure:
                return
            try:
                client = await TunnelClient.open(portal)
            except Exception as exc:  # reported, and the figure is for what did open
                failure = failure or f"{type(exc).__name__}: {exc}"
                return
            client.start()
            opened.append(client)

    await asyncio.gather(*(one() for _ in range(count)))
    waiting = [c.first_sync.wait() for c in opened]
    try:
        await asyncio.wait_for(asyncio.gather(*waiting), max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        late = sum(not c.first_sync.is_set() for c in opened)
        failure = failure or f"{late} sessions had no first frame within {budget:.0f} s"
    return opened, failure


async def _measure(args: argparse.Namespace, portal_port: int, portal_pid: int, guacd: Any, vnc: Any,
                   totp_code: Callable[[], str], password: str, workdir: Path) -> None:
    from asgiref.sync import sync_to_async

    watched = Watched({"portal": portal_pid, "guacd": guacd.processes[0].pid,
                       "x11vnc": vnc.processes[-1].pid, "Xvfb": vnc.processes[0].pid})
    portal = PortalUser(portal_port)
    await portal.sign_in(password, totp_code)
    results: dict[str, Any] = {}

    # Warm the portal (imports, first queries) with one session, then measure with fresh ones.
    warm = await TunnelClient.open(portal)
    warm.start()
    await asyncio.wait_for(warm.first_sync.wait(), 20)
    await warm.close()

    churn = _start_churn(vnc.display, workdir)
    try:
        await asyncio.sleep(1.5)
        tunnel = await TunnelClient.open(portal)
        plain = await TunnelClient.open(portal, deflate=False)
        parameters = await sync_to_async(_direct_parameters)(tunnel.session_id)
        direct = await DirectClient.open(guacd.host, guacd.port, parameters)
        parameters = {}
        clients: list[GuacClient] = [direct, tunnel, plain]
        for client in clients:
            client.start()
        await asyncio.wait_for(asyncio.gather(*(c.first_sync.wait() for c in clients)), 20)
        await asyncio.sleep(2)  # past the first full-screen frame, into the steady stream
        _progress("downstream")
        for client in clients:
            client.delays = []
        results["down"] = await _downstream(clients, args.seconds, watched)
        results["one_way"] = {c.name: c.delays for c in clients}
        for client in clients:
            client.delays = None
        _progress("round trips, busy desktop")
        results["busy"] = await _round_trips(direct, tunnel, max(20, args.seconds * 5))
    finally:
        _stop(churn)
    await asyncio.sleep(1.5)  # the xterm's window goes: let the screen settle
    _progress("upstream")
    results["up"] = {c.name: await _upstream(c, args.seconds / 2, watched) for c in (direct, tunnel)}
    await asyncio.sleep(0.5)
    _progress("pings")
    results["ping"] = {c.name: await _pings(c, 2000) for c in (tunnel, plain)}
    results["errors"] = [f"{c.name}: {c.error}" for c in clients if c.error]
    results["split"] = tunnel.split_messages + plain.split_messages
    for client in clients:
        await client.close()

    # Memory: the portal's RSS settled, then with N live sessions, then after they end.
    await asyncio.sleep(2)
    _progress("memory")
    rss_before = _rss_kib(portal_pid)
    guacd_before = len(_children(guacd.processes[0].pid))
    started = time.monotonic()
    sessions, failure = await _open_many(portal, args.sessions, budget=90)
    open_seconds = time.monotonic() - started
    await asyncio.sleep(3)
    live = [s for s in sessions if s.first_sync.is_set() and not s.error]
    rss_with = _rss_kib(portal_pid)
    guacd_children = _children(guacd.processes[0].pid)
    guacd_rss = sum(_rss_kib(pid) for pid in guacd_children)
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    await asyncio.sleep(3)
    rss_after = _rss_kib(portal_pid)
    results["memory"] = {"asked": args.sessions, "opened": len(sessions), "live": len(live),
                         "failure": failure, "open_seconds": open_seconds, "before": rss_before,
                         "with": rss_with, "after": rss_after,
                         "guacd_children": len(guacd_children) - guacd_before,
                         "guacd_rss": guacd_rss}
    await portal.http.aclose()
    _report(args, results)


def _report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    down, up = r["down"]["rates"], r["up"]
    print(f"desktop tunnel bench: cores={os.cpu_count()} seconds={args.seconds} sessions={args.sessions} "
          f"screen={SCREEN[0]}x{SCREEN[1]} guacd 1.3 + x11vnc on Xvfb, SQLite, in-memory channel layer")
    print("throughput, guacd -> client (all reading the same scrolling desktop at once)")
    print(f"  {'':20} {'KiB/s':>7} {'instr/s':>8} {'frames/s':>8} | "
          f"client -> guacd {'B/s':>6} {'instr/s':>7}")
    for name, x in down.items():
        print(f"  {name:20} {x['in_bytes'] / 1024:7.0f} {x['in_ins']:8.0f} {x['frames']:8.1f} | "
              f"{'':15} {x['out_bytes']:6.0f} {x['out_ins']:7.0f}")
    base = down["direct"]
    for name in ("tunnel", "tunnel, no deflate"):
        rb, ri = down[name]["in_bytes"] / base["in_bytes"], down[name]["in_ins"] / base["in_ins"]
        print(f"  {name}/direct: bytes {rb:.2f}x, instructions {ri:.2f}x "
              f"(target >= 0.9 -> {'met' if min(rb, ri) >= 0.9 else 'NOT met'})")
    print(f"  CPU during the window: {r['down']['cpu']}")
    print(f"throughput, client -> guacd (nop as fast as accepted, {WINDOW} in flight at most, "
          "acked by guacd)")
    for name in ("direct", "tunnel"):
        print(f"  {name:20} {up[name]['out_bytes'] / 1024:7.0f} KiB/s {up[name]['out_ins']:7.0f} instr/s   "
              f"CPU: {up[name]['cpu']}")
    ratio_up = up["tunnel"]["out_ins"] / up["direct"]["out_ins"]
    print(f"  tunnel/direct: {ratio_up:.2f}x (target >= 0.9 -> {'met' if ratio_up >= 0.9 else 'NOT met'})")
    print(f"latency, ms{'':34} {'p50':>7} {'p99':>7} {'added p50':>9}")
    one_way, busy = r["one_way"], r["busy"]

    def row(label: str, values: list[float], baseline: list[float] | None = None) -> None:
        added = f"{_pct(values, .5) - _pct(baseline, .5):9.3f}" if baseline else ""
        print(f"  {label:50} {_pct(values, .5):7.3f} {_pct(values, .99):7.3f} {added}")

    for name, values in r["ping"].items():
        row(f"relay's own round trip, ping ({name})", values)
    for name, values in one_way.items():
        row(f"guacd -> client one way ({name})", values, None if name == "direct" else one_way["direct"])
    for name, values in busy.items():
        row(f"file -> ack via guacd ({name}, {len(values)})", values,
            None if name == "direct" else busy["direct"])
    added = _pct(one_way["tunnel"], .5) - _pct(one_way["direct"], .5)
    ping = _pct(r["ping"]["tunnel"], .5)
    print(f"  added p50: guacd -> client {added:.3f} ms, relay round trip {ping:.3f} ms "
          f"(target < 1 -> {'met' if max(added, ping) < 1 else 'NOT met'})")
    m = r["memory"]
    per = (m["with"] - m["before"]) / max(1, m["opened"])
    print(f"memory: {m['opened']} tunnels open of {m['asked']} asked, {m['live']} showing the desktop "
          f"(all open after {m['open_seconds']:.1f} s){'; ' + m['failure'] if m['failure'] else ''}")
    print(f"  portal RSS before {m['before'] / 1024:.1f} MiB, with sessions {m['with'] / 1024:.1f} MiB, "
          f"after they ended {m['after'] / 1024:.1f} MiB")
    print(f"  per open tunnel: {per:.0f} KiB  (guacd: {m['guacd_children']} children, "
          f"{m['guacd_rss'] / 1024 / max(1, m['guacd_children']):.1f} MiB RSS each)")
    if r["errors"] or r["split"]:
        print(f"  problems: {r['errors']} messages split inside an instruction: {r['split']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=100)
    args = parser.parse_args()

    from demo.targets import free_port, start_guacd, start_vnc_target

    workdir = Path(tempfile.mkdtemp(prefix="bench-tunnel-"))
    stack: list[Any] = []
    portal: subprocess.Popen | None = None
    try:
        guacd = start_guacd(workdir / "guacd")
        stack.append(guacd)
        vnc = start_vnc_target(workdir / "vnc")
        stack.append(vnc)
        os.environ.update({
            "DATABASE_URL": f"sqlite:///{workdir / 'portal.sqlite3'}",
            "PORTAL_SECRET_KEY": secrets.token_urlsafe(64),
            "PORTAL_TRUSTED_PROXIES": "127.0.0.1/32",
            "PORTAL_RECORDINGS_DIR": str(workdir / "recordings"),
            "PORTAL_ASSERTION_KEYS_DIR": str(workdir / "assertion_keys"),
            "GUACD_HOST": guacd.host, "GUACD_PORT": str(guacd.port),
        })
        os.environ.pop("REDIS_URL", None)
        subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, check=True)
        import sqlite3

        with sqlite3.connect(workdir / "portal.sqlite3") as db:  # as var/ gets it: readers never wait
            db.execute("PRAGMA journal_mode=WAL")
        password = secrets.token_urlsafe(24)
        totp_code = _prepare_database(vnc, password)
        from portal.server import HTTP_PROTOCOL

        port = free_port()
        log = workdir / "portal.log"
        portal = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--http", HTTP_PROTOCOL,
             "--host", "127.0.0.1", "--port",
             str(port), "--log-level", "warning", "--no-access-log", "--no-proxy-headers",
             "--no-server-header"],
            cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait_http(port, portal, log)
        _progress("portal up")
        try:
            asyncio.run(_measure(args, port, portal.pid, guacd, vnc, totp_code, password, workdir))
        except BaseException:
            print(f"portal log (tail):\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise
    finally:
        if portal is not None and portal.poll() is None:
            portal.terminate()
            try:
                portal.wait(timeout=10)
            except subprocess.TimeoutExpired:
                portal.kill()
        for target in reversed(stack):
            target.stop()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
