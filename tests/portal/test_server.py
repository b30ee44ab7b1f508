"""The portal's HTTP protocol: what is written in one loop turn leaves in one write; request
heads are bounded, carry one Host and name no other host."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

from portal.server import (
    DEFAULT_MAX_HEAD_BYTES,
    HTTP_PROTOCOL,
    MAX_HEADER_FIELDS,
    CoalescingTransport,
    PortalHttpProtocol,
    RequestRefused,
    check_request_target,
    head_end,
    max_head_bytes,
)
from tests.upstreams.launch import free_port, portal_in_thread


class _Recorder:
    """Stands in for the socket transport underneath, to count the writes that reach it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)

    def pause_reading(self) -> None:
        """Flow control asks this of the socket transport; nothing to do for a recorder."""

    def resume_reading(self) -> None:
        """As above."""


async def test_a_head_and_body_written_in_one_turn_leave_as_one_write_in_order():
    below = _Recorder()
    transport = CoalescingTransport(below, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    transport.write(bytearray(b"hel"))
    transport.write(memoryview(b"lo"))
    assert below.writes == [] and transport.get_write_buffer_size() == 43
    await asyncio.sleep(0)
    assert below.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
    transport.write(b"next turn")
    await asyncio.sleep(0)
    assert below.writes[1:] == [b"next turn"]


async def test_closing_sends_what_is_pending_first_and_aborting_drops_it():
    below = _Recorder()
    transport = CoalescingTransport(below, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"last words")
    transport.close()
    assert below.writes == [b"last words"] and below.closed

    other = _Recorder()
    transport = CoalescingTransport(other, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)
    assert other.writes == [] and other.aborted


async def test_everything_else_is_the_transport_underneath():
    below = _Recorder()
    transport = CoalescingTransport(below, asyncio.get_running_loop())  # type: ignore[arg-type]
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)


async def test_a_real_connection_receives_every_byte_in_order():
    received = bytearray()
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.read())  # until the client closes
        done.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    real, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    transport = CoalescingTransport(real, loop)  # type: ignore[arg-type]
    expected = b"".join(bytes([i % 256]) * 1000 for i in range(300))
    for i in range(300):
        transport.write(bytes([i % 256]) * 1000)
        if i % 7 == 0:
            await asyncio.sleep(0)  # some writes in later turns
    transport.close()
    await asyncio.wait_for(done.wait(), 5)
    server.close()
    assert bytes(received) == expected


# --- Request heads: bounded, one Host, no foreign targets (docs/decisions/0016) ---


@pytest.mark.parametrize(("tail", "data", "start", "stop", "end"), [
    (b"", b"GET / HTTP/1.1\r\nHost: a\r\n\r\nnext", 0, 31, 27),
    (b"", b"GET / HTTP/1.1\r\nHost: a\r\n\r\nnext", 0, 26, -1),  # the blank line is past the room
    (b"", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 27, 27),  # exactly the room
    (b"\r\n\r", b"\nbody", 0, 5, 1),  # the blank line split between two reads
    (b"a\r\n", b"\r\nbody", 0, 6, 2),
    (b"xyz", b"POST / HTTP/1.1\r\n\r\n", 5, 19, 19),
    (b"", b"X: 1\r\nY: 2\r\n", 0, 12, -1),
])
def test_the_end_of_a_head_is_found_within_the_room_and_across_reads(tail, data, start, stop, end):
    assert head_end(tail, data, start, stop) == end


@pytest.mark.parametrize(("method", "target", "hosts", "refused"), [
    (b"GET", b"/x", [b"portal.example"], None),
    (b"GET", b"/x", [], None),  # a missing Host is Django's to judge (ALLOWED_HOSTS)
    (b"OPTIONS", b"*", [b"portal.example"], None),
    (b"GET", b"http://portal.example/x", [b"portal.example"], None),
    (b"GET", b"http://PORTAL.example:80/x", [b"portal.example"], None),  # case, default port
    (b"GET", b"https://portal.example/x", [b"Portal.Example:443"], None),
    (b"GET", b"http://[::1]:8000/x", [b"[::1]:8000"], None),
    (b"GET", b"/x", [b"portal.example", b"portal.example"], "more than one Host header"),
    (b"GET", b"/x", [b"portal.example", b"evil.example"], "more than one Host header"),
    (b"GET", b"http://evil.example/x", [b"portal.example"], "names another host"),
    (b"GET", b"http://portal.example:8080/x", [b"portal.example"], "names another host"),
    (b"GET", b"https://portal.example/x", [b"portal.example:80"], "names another host"),
    (b"GET", b"http://portal.example/x", [], "names another host"),
    (b"GET", b"http://portal.example/x", [b"portal.example:x"], "names another host"),
    (b"GET", b"http://user@portal.example/x", [b"portal.example"], "not a path or an http"),
    (b"GET", b"ftp://portal.example/x", [b"portal.example"], "not a path or an http"),
    (b"CONNECT", b"evil.example:443", [b"evil.example:443"], "CONNECT is not served here"),
])
def test_a_target_or_host_that_could_name_two_hosts_is_refused(method, target, hosts, refused):
    if refused is None:
        check_request_target(method, target, hosts)
        return
    with pytest.raises(RequestRefused, match=refused) as caught:
        check_request_target(method, target, hosts)
    assert caught.value.status == 400


async def _say_what_was_asked(scope: dict, receive: Any, send: Any) -> None:
    """A tiny ASGI app: answers ``<method> <path> <body length>``."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = f"{scope['method']} {scope['path']} {size}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def tiny_server() -> Iterator[int]:
    """A tiny app under uvicorn with the portal's protocol, in a thread; yields its port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_say_what_was_asked, http=HTTP_PROTOCOL, host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off",
                                           server_header=False, date_header=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def _exchange(port: int, *sends: bytes, pause: float = 0.0) -> tuple[bytes, bool]:
    """Send the pieces, read until the server closes (or 3 s pass); the bytes and whether it closed."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for piece in sends:
            sock.sendall(piece)
            time.sleep(pause)
        sock.settimeout(3)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            pass
        return received, True


def _head(path: str, size: int, *, extra: str = "") -> bytes:
    """A GET head of exactly ``size`` bytes (padded with one header)."""
    start = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}X-Pad: "
    pad = size - len(start) - 4
    assert pad >= 0
    return start.encode() + b"p" * pad + b"\r\n\r\n"


def _statuses(received: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]


def test_two_heads_at_the_limit_on_one_connection_both_succeed_and_one_byte_more_is_431(tiny_server):
    limit = max_head_bytes()
    assert limit == DEFAULT_MAX_HEAD_BYTES
    received, closed = _exchange(tiny_server, _head("/one", limit), _head("/two", limit),
                                 _head("/three", limit + 1), pause=0.05)
    assert _statuses(received) == [200, 200, 431] and closed
    assert b"GET /one 0" in received and b"GET /two 0" in received
    assert received.endswith(b"the request head is too large\n")
    assert b"connection: close" in received.split(b"GET /two 0")[1]


def test_pipelined_heads_near_the_limit_in_one_send_are_all_answered_in_order(tiny_server):
    limit = max_head_bytes()
    post = b"POST /form HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello"
    received, closed = _exchange(tiny_server, _head("/a", limit - 1) + post + _head("/b", limit)
                                 + _head("/c", 200, extra="Connection: close\r\n"))
    assert _statuses(received) == [200, 200, 200, 200] and closed
    assert [received.index(x) for x in (b"GET /a 0", b"POST /form 5", b"GET /b 0", b"GET /c 0")] == sorted(
        received.index(x) for x in (b"GET /a 0", b"POST /form 5", b"GET /b 0", b"GET /c 0"))


async def test_heads_pipelined_after_a_body_in_one_read_count_only_their_own_bytes():
    """One read holding a form post and two heads of nearly the limit after its body: the
    protocol is driven directly so that all of it arrives in a single ``data_received``."""
    config = uvicorn.Config(_say_what_was_asked, http=HTTP_PROTOCOL, lifespan="off", log_level="warning",
                            server_header=False, date_header=False)
    protocol = PortalHttpProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    below = _Recorder()
    protocol.connection_made(below)  # type: ignore[arg-type]
    limit = max_head_bytes()
    post = b"POST /form HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello"
    protocol.data_received(post + _head("/a", limit - 10) + _head("/b", limit - 10)
                           + _head("/c", 100))
    for _ in range(50):
        await asyncio.sleep(0)
    received = b"".join(below.writes)
    assert _statuses(received) == [200, 200, 200, 200] and not below.closed
    assert re.findall(rb"(?:GET|POST) /\w+ \d", received) == [b"POST /form 5", b"GET /a 0", b"GET /b 0", b"GET /c 0"]


def test_bodies_larger_than_the_head_limit_are_not_counted_as_head(tiny_server):
    body = b"b" * (4 * max_head_bytes())
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:100_000], body[100_000:])) + b"0\r\n\r\n"
    received, closed = _exchange(
        tiny_server,
        b"POST /sized HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        b"POST /chunked HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
        _head("/after", 1000, extra="Connection: close\r\n"))
    assert _statuses(received) == [200, 200, 200] and closed
    assert re.findall(rb"(?:GET|POST) /\w+ \d+", received) == [
        b"POST /sized %d" % len(body), b"POST /chunked %d" % len(body), b"GET /after 0"]


def test_an_oversized_head_pipelined_after_a_good_one_gets_431_after_the_good_answer(tiny_server):
    received, closed = _exchange(tiny_server, _head("/good", 100) + _head("/big", max_head_bytes() + 1))
    assert _statuses(received) == [200, 431] and closed
    assert received.index(b"GET /good 0") < received.index(b"431")


def test_a_blank_line_split_between_two_sends_still_ends_the_head(tiny_server):
    head = _head("/split", 300, extra="Connection: close\r\n")
    received, closed = _exchange(tiny_server, head[:-2], head[-2:], pause=0.05)
    assert _statuses(received) == [200] and b"GET /split 0" in received and closed


def test_more_than_the_allowed_header_fields_get_431(tiny_server):
    fields = "".join(f"X-{i}: 1\r\n" for i in range(MAX_HEADER_FIELDS + 1))
    received, closed = _exchange(tiny_server, f"GET /many HTTP/1.1\r\n{fields}\r\n".encode())
    assert _statuses(received) == [431] and b"too many header fields" in received and closed
    fields = "".join(f"X-{i}: 1\r\n" for i in range(MAX_HEADER_FIELDS - 2))
    received, _ = _exchange(tiny_server, f"GET /enough HTTP/1.1\r\nHost: a\r\n{fields}Connection: close\r\n\r\n"
                            .encode())
    assert _statuses(received) == [200]


def test_a_duplicate_host_header_gets_400_and_the_connection_closes(tiny_server):
    received, closed = _exchange(
        tiny_server, b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n")
    assert _statuses(received) == [400] and b"more than one Host header" in received and closed


def test_an_absolute_form_target_naming_another_host_gets_400(tiny_server):
    received, closed = _exchange(tiny_server, b"GET http://evil.example/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert _statuses(received) == [400] and b"names another host" in received and closed
    received, closed = _exchange(tiny_server, b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n")
    assert _statuses(received) == [400] and b"CONNECT" in received and closed


def test_an_absolute_form_target_naming_the_same_host_is_answered_as_its_path(tiny_server):
    received, _ = _exchange(
        tiny_server, b"GET HTTP://LocalHost:80/x?q=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert _statuses(received) == [200] and received.endswith(b"GET /x 0")


# --- The same against the real portal, over HTTPS as it is served ---


@pytest.fixture(scope="module")
def real_portal(django_db_setup, tmp_path_factory) -> Iterator[tuple[str, int]]:
    """The portal's real application in a thread of this process (so its RSS is ours)."""
    with portal_in_thread(tmp_path_factory.mktemp("tls")) as url:
        yield "127.0.0.1", int(url.rsplit(":", 1)[1])


def _tls_socket(address: tuple[str, int]) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context.wrap_socket(socket.create_connection(address, timeout=5), server_hostname="localhost")


def _tls_exchange(address: tuple[str, int], request: bytes) -> bytes:
    with _tls_socket(address) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, ssl.SSLError, TimeoutError):
            pass
        return received


def _rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024


def test_a_100_mib_head_gets_431_without_being_buffered(real_portal, record_property):
    url = f"https://{real_portal[0]}:{real_portal[1]}/healthz"
    poller = httpx.Client(verify=False, timeout=5)
    assert poller.get(url).status_code == 200
    baseline = peak = _rss_bytes()
    total, piece = 100 * 1024 * 1024, b"a" * (256 * 1024)
    flood: dict[str, object] = {}

    def send_a_100_mib_head() -> None:
        sent, answer = 0, b""
        with _tls_socket(real_portal) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
                while sent < total:  # an attacker does not stop to listen
                    sock.sendall(piece)
                    sent += len(piece)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError, TimeoutError) as error:
                flood["error"] = repr(error)
            try:
                answer = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError, TimeoutError) as error:
                flood["read_error"] = repr(error)
        flood.update(sent=sent, answer=answer, ended=time.monotonic())

    sender = threading.Thread(target=send_a_100_mib_head)
    started = time.monotonic()
    sender.start()
    latencies = []
    while sender.is_alive() or time.monotonic() - started < 1.0:
        before = time.monotonic()
        response = poller.get(url)
        latencies.append(time.monotonic() - before)
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        peak = max(peak, _rss_bytes())
        time.sleep(0.02)
    sender.join(10)
    poller.close()
    observed = (f"polls={len(latencies)} max_poll={max(latencies) * 1000:.1f}ms "
                f"sent_before_close={flood['sent']} bytes rss_growth={(peak - baseline) / 2**20:.1f} MiB "
                f"flood_took={(flood['ended'] - started) * 1000:.0f}ms")
    print(observed)
    record_property("observed", observed)
    assert flood["answer"].startswith(b"HTTP/1.1 431 "), flood
    assert flood["sent"] < total // 10, observed  # closed long before everything was sent
    assert max(latencies) < 1.0, observed
    assert peak - baseline < 20 * 2**20, observed


def test_the_real_portal_refuses_two_hosts_and_foreign_targets_and_serves_its_own(real_portal):
    two_hosts = _tls_exchange(real_portal, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n")
    assert two_hosts.startswith(b"HTTP/1.1 400 ") and b"more than one Host header" in two_hosts
    foreign = _tls_exchange(real_portal, b"GET http://evil.example/healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert foreign.startswith(b"HTTP/1.1 400 ") and b"names another host" in foreign
    own = _tls_exchange(real_portal, b"GET https://LOCALHOST:443/healthz HTTP/1.1\r\nHost: localhost\r\n"
                                     b"Connection: close\r\n\r\n")
    assert own.startswith(b"HTTP/1.1 200 ") and own.endswith(b'{"status": "ok"}')
