"""The upstream client: framing, keep-alive, timeouts and failures, on real sockets.

Each test runs a small TCP server that answers with exactly the bytes the test gives it
(well-formed or not), so what is checked is what the proxy does with real upstream
behaviour: what it sends on the wire, when it reuses a connection, and how it fails.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable

import pytest

from portal.config import ConfigError, load_config
from streaming.proxy.models import AccessRecord
from streaming.proxy.records import access_log
from streaming.proxy.upstream import Upstream, UpstreamBroken, UpstreamClients
from tests.upstreams.launch import tls_files

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Wire:
    """A TCP server on 127.0.0.1 that records what it received and how often it was dialled."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.upstream: Upstream

    async def __aenter__(self, tls: ssl.SSLContext | None = None) -> Wire:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
        port = self.server.sockets[0].getsockname()[1]
        scheme = "https" if tls else "http"
        self.upstream = Upstream.parse(f"{scheme}://127.0.0.1:{port}/base/")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.received.append(head)
        return head


async def fetch(clients: UpstreamClients, upstream: Upstream, method: str = "GET", path: str = "/x",
                headers: list[tuple[str, str]] | None = None, body=None) -> tuple[int, bytes, list]:
    response = await clients.for_upstream(upstream).request(method, upstream.target(path, ""),
                                                            headers or [], body)
    try:
        data = b"".join([chunk async for chunk in response.iter_chunks(65536)])
        return response.status, data, response.raw_headers
    finally:
        response.release()


def answering(*responses: bytes, close_after: bool = False) -> Callable[[Wire], Handler]:
    """A handler that answers each request head with the next response, whichever connection
    it arrives on; after the last one it closes (``close_after``) or waits for the client."""
    queue = list(responses)

    def bind(wire: Wire) -> Handler:
        async def handler(reader, writer):
            while queue:
                await wire.head(reader)
                writer.write(queue.pop(0))
                await writer.drain()
            if close_after:
                return
            await reader.read()  # keep the connection open until the client closes it
        return handler
    return bind


async def serve(make: Callable[[Wire], Handler], tls: ssl.SSLContext | None = None) -> Wire:
    wire = Wire(lambda r, w: None)  # type: ignore[arg-type,return-value]
    wire.handler = make(wire)
    return await wire.__aenter__(tls)


async def test_the_request_goes_out_exactly_as_vetted_and_the_connection_is_kept():
    wire = await serve(answering(OK, OK))
    clients = UpstreamClients()
    try:
        first = await fetch(clients, wire.upstream, path="/a%2Fb/../c?", headers=[("x-one", "1")])
        second = await fetch(clients, wire.upstream, path="/again")
    finally:
        await clients.aclose()
        await wire.__aexit__()
    assert first[:2] == (200, b"hello") and second[:2] == (200, b"hello")
    port = wire.upstream.port
    assert wire.received[0] == (f"GET /base/a%2Fb/../c? HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
                                "x-one: 1\r\n\r\n").encode()
    assert wire.received[1].startswith(b"GET /base/again HTTP/1.1\r\n")
    assert wire.connections == 1, "a keep-alive connection is reused"


async def test_bodies_are_framed_whole_streamed_or_empty():
    seen: list[bytes] = []

    def make(wire: Wire) -> Handler:
        async def handler(reader, writer):
            while True:
                head = await wire.head(reader)
                if b"transfer-encoding: chunked" in head:
                    body = b""
                    while True:
                        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                        body += (await reader.readexactly(size + 2))[:-2]
                        if size == 0:
                            break
                else:
                    length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                seen.append(body)
                writer.write(OK)
        return handler

    async def stream():
        for piece in (b"one ", b"two ", b"three"):
            yield piece

    wire = await serve(make)
    clients = UpstreamClients()
    try:
        await fetch(clients, wire.upstream, "POST", body=b"held form")
        await fetch(clients, wire.upstream, "POST", body=stream())
        await fetch(clients, wire.upstream, "DELETE")
        await fetch(clients, wire.upstream, "PUT", headers=[("content-length", "3")],
                    body=(c async for c in _pieces(b"abc")))
    finally:
        await clients.aclose()
        await wire.__aexit__()
    assert seen == [b"held form", b"one two three", b"", b"abc"]
    assert b"content-length: 9\r\n" in wire.received[0]
    assert b"transfer-encoding: chunked\r\n" in wire.received[1]
    assert b"content-length: 0\r\n" in wire.received[2]
    assert b"transfer-encoding" not in wire.received[3], "the client's own length frames it"


async def _pieces(data: bytes):
    yield data


async def test_chunked_and_read_to_close_answers_arrive_whole():
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    until_close = b"HTTP/1.0 200 OK\r\n\r\nall of it"
    wire = await serve(answering(chunked, until_close, close_after=True))
    clients = UpstreamClients()
    try:
        first = await fetch(clients, wire.upstream)
        second = await fetch(clients, wire.upstream)
    finally:
        await clients.aclose()
        await wire.__aexit__()
    assert first[1] == b"abcde" and second[1] == b"all of it"


async def test_an_interim_100_continue_is_skipped_for_the_real_answer():
    wire = await serve(answering(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
                                 b"content-length: 2\r\n\r\nok"))
    clients = UpstreamClients()
    try:
        status, body, _ = await fetch(clients, wire.upstream, "POST", body=b"x")
    finally:
        await clients.aclose()
        await wire.__aexit__()
    assert (status, body) == (201, b"ok")


async def test_a_head_answer_needs_no_body_and_its_connection_is_not_reused():
    wire = await serve(answering(b"HTTP/1.1 200 OK\r\ncontent-length: 999\r\n\r\n", OK))
    clients = UpstreamClients()
    try:
        head = await asyncio.wait_for(fetch(clients, wire.upstream, "HEAD"), 5)
        after = await fetch(clients, wire.upstream)
    finally:
        await clients.aclose()
        await wire.__aexit__()
    assert head[:2] == (200, b"")
    assert after[:2] == (200, b"hello")
    assert wire.connections == 2


@pytest.mark.parametrize("response", [
    b"SMTP ready\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (70 * 1024) + b"\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
], ids=["not-http", "two-lengths", "oversized-header", "unasked-upgrade"])
async def test_a_garbled_answer_is_a_broken_upstream(response):
    wire = await serve(answering(response))
    clients = UpstreamClients()
    try:
        with pytest.raises(UpstreamBroken):
            await fetch(clients, wire.upstream)
    finally:
        await clients.aclose()
        await wire.__aexit__()


async def test_an_answer_cut_short_fails_instead_of_passing_as_complete():
    wire = await serve(answering(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this",
                                 close_after=True))
    clients = UpstreamClients()
    try:
        with pytest.raises(UpstreamBroken, match="mid-response"):
            await fetch(clients, wire.upstream)
    finally:
        await clients.aclose()
        await wire.__aexit__()


async def test_a_silent_upstream_times_out_and_so_does_one_that_stalls_mid_body(settings):
    settings.PORTAL_PROXY_READ_TIMEOUT = 0.3
    silent = await serve(answering())

    def stalling(wire: Wire) -> Handler:
        async def handler(reader, writer):
            await wire.head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
            await reader.read()
        return handler

    stalls = await serve(stalling)
    clients = UpstreamClients()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fetch(clients, silent.upstream), 5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fetch(clients, stalls.upstream), 5)
    finally:
        await clients.aclose()
        await silent.__aexit__()
        await stalls.__aexit__()


async def test_a_kept_connection_closed_by_the_upstream_is_replaced_once_for_a_replayable_request():
    def closes_after_each(wire: Wire) -> Handler:
        async def handler(reader, writer):
            await wire.head(reader)
            writer.write(OK)  # announces keep-alive, then hangs up anyway
            await writer.drain()
        return handler

    wire = await serve(closes_after_each)
    clients = UpstreamClients()
    try:
        assert (await fetch(clients, wire.upstream))[1] == b"hello"
        await asyncio.sleep(0.1)  # the close reaches the client while the connection is idle
        assert (await fetch(clients, wire.upstream))[1] == b"hello"
    finally:
        await clients.aclose()
        await wire.__aexit__()
    assert wire.connections == 2


async def test_a_form_post_is_never_sent_twice_on_its_own():
    """A POST the upstream may have acted on before hanging up is not retried: the proxy
    reports the failure (502) rather than risk doing the write twice."""
    def hangs_up_after_reading(wire: Wire) -> Handler:
        async def handler(reader, writer):
            await wire.head(reader)
            if len(wire.received) == 1:
                writer.write(OK)
                await writer.drain()
                await wire.head(reader)  # reads the POST, then dies without a word
        return handler

    wire = await serve(hangs_up_after_reading)
    clients = UpstreamClients()
    try:
        assert (await fetch(clients, wire.upstream))[1] == b"hello"
        with pytest.raises(UpstreamBroken):
            await fetch(clients, wire.upstream, "POST", body=b"pay=100")
    finally:
        await clients.aclose()
        await wire.__aexit__()
    assert [h.split(b" ", 1)[0] for h in wire.received] == [b"GET", b"POST"]


async def test_an_unreachable_upstream_is_a_connection_error():
    clients = UpstreamClients()
    wire = await serve(answering())
    upstream = wire.upstream
    await wire.__aexit__()  # nothing listens on that port any more
    try:
        with pytest.raises(OSError):
            await fetch(clients, upstream)
    finally:
        await clients.aclose()


async def test_an_https_upstream_is_verified_against_the_configured_ca_and_nothing_else(
        settings, tmp_path):
    key, cert = tls_files(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    wire = await serve(answering(OK, OK), tls=server_tls)
    try:
        settings.PORTAL_PROXY_CA_FILE = None  # the system's trust store: our local CA is not in it
        with pytest.raises(ssl.SSLCertVerificationError):
            await fetch(UpstreamClients(), wire.upstream)
        settings.PORTAL_PROXY_CA_FILE = tmp_path / "ca.pem"
        clients = UpstreamClients()
        try:
            status, body, _ = await fetch(clients, wire.upstream)
        finally:
            await clients.aclose()
    finally:
        await wire.__aexit__()
    assert (status, body) == (200, b"hello")
    assert wire.received[-1].startswith(b"GET /base/x HTTP/1.1\r\n")


def test_a_missing_upstream_ca_file_stops_the_portal_at_start(tmp_path):
    with pytest.raises(ConfigError, match="PORTAL_PROXY_CA_FILE"):
        load_config({"PORTAL_PROXY_CA_FILE": str(tmp_path / "nowhere.pem"),
                     "PORTAL_SECRET_KEY": secrets.token_urlsafe(64)})


async def test_no_more_connections_than_the_limit_and_every_request_is_served(settings):
    settings.PORTAL_PROXY_MAX_CONNECTIONS = 2
    open_now, most_open = 0, 0

    def slow(wire: Wire) -> Handler:
        async def handler(reader, writer):
            nonlocal open_now, most_open
            open_now += 1
            most_open = max(most_open, open_now)
            try:
                while True:
                    await wire.head(reader)
                    await asyncio.sleep(0.05)
                    writer.write(OK)
                    await writer.drain()
            finally:
                open_now -= 1
        return handler

    wire = await serve(slow)
    clients = UpstreamClients()
    try:
        first = [asyncio.create_task(fetch(clients, wire.upstream)) for _ in range(2)]
        await asyncio.sleep(0.01)  # both slots busy
        given_up = asyncio.create_task(fetch(clients, wire.upstream))
        await asyncio.sleep(0.01)  # queued behind them
        given_up.cancel()  # a request that leaves while queued gives its turn away
        results = await asyncio.gather(*first, *(fetch(clients, wire.upstream) for _ in range(5)))
        assert given_up.cancelled()
    finally:
        await clients.aclose()
        await wire.__aexit__()
    assert [r[1] for r in results] == [b"hello"] * 7
    assert most_open <= 2 and wire.connections <= 2


async def test_a_slow_reader_holds_a_bounded_amount_of_the_upstreams_answer():
    size = 8 * 1024 * 1024

    def big(wire: Wire) -> Handler:
        async def handler(reader, writer):
            await wire.head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
            for _ in range(size // 65536):
                writer.write(b"z" * 65536)
                await writer.drain()
        return handler

    wire = await serve(big)
    clients = UpstreamClients()
    upstream = wire.upstream
    most_held, total = 0, 0
    try:
        response = await clients.for_upstream(upstream).request("GET", upstream.target("/", ""), [], None)
        try:
            async for chunk in response.iter_chunks(65536):
                total += len(chunk)
                await asyncio.sleep(0.002)  # a browser slower than the upstream
                most_held = max(most_held, response._buffered)
        finally:
            response.release()
    finally:
        await clients.aclose()
        await wire.__aexit__()
    assert total == size
    assert most_held < 1024 * 1024, f"held {most_held} bytes for a slow reader"


# --- what the browser sees when the app fails -------------------------------------------


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def test_an_app_that_cannot_be_reached_gets_a_502_page_and_a_record(web_resource, browser_for, worker):
    closed = _listener()
    port = closed.getsockname()[1]
    closed.close()
    web_resource("gone-app", f"http://127.0.0.1:{port}/")
    response = browser_for(worker).get("/apps/gone-app/page")
    assert response.status_code == 502
    assert "could not be reached" in response.text
    access_log.flush()
    record = AccessRecord.objects.get(resource="gone-app")
    assert (record.status, record.decision, record.actor) == (502, "allow", "wendy")


def test_an_app_that_never_answers_gets_a_504_page(web_resource, browser_for, worker, settings):
    settings.PORTAL_PROXY_READ_TIMEOUT = 0.5
    silent = _listener()  # accepts (the kernel does), reads nothing, answers nothing
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True)
    thread.start()
    web_resource("silent-app", f"http://127.0.0.1:{silent.getsockname()[1]}/")
    try:
        response = browser_for(worker).get("/apps/silent-app/page")
    finally:
        silent.close()
        for sock in accepted:
            sock.close()
    assert response.status_code == 504
    assert "took too long to answer" in response.text
