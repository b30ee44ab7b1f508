"""Bodies stream both ways in bounded memory; every request leaves an access record."""

from __future__ import annotations

import hashlib
import resource

import pytest

from streaming.proxy.models import AccessRecord
from streaming.proxy.records import access_log

pytestmark = pytest.mark.django_db(transaction=True)

SIZE = 128 * 1024 * 1024  # large against the bound below; the bench moves 1 GiB the same way


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def echo(web_resource, echo_upstream):
    return web_resource("echo", echo_upstream.url)


def test_a_large_download_streams_in_bounded_memory(echo, browser_for, worker):
    client = browser_for(worker)
    client.get("/apps/echo/bytes", params={"n": 1024 * 1024})  # warm up pools and buffers
    before = _peak_rss_mib()
    received = 0
    with client.stream("GET", "/apps/echo/bytes", params={"n": SIZE}) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw(1024 * 1024):
            received += len(chunk)
    assert received == SIZE
    assert _peak_rss_mib() - before < 48, "the proxy held the download in memory"


def test_a_large_upload_streams_in_bounded_memory(echo, browser_for, worker):
    client = browser_for(worker)
    block = b"u" * (1024 * 1024)
    digest = hashlib.sha256()
    for _ in range(SIZE // len(block)):
        digest.update(block)

    def body():
        for _ in range(SIZE // len(block)):
            yield block

    client.post("/apps/echo/sink", content=b"warm-up")
    before = _peak_rss_mib()
    response = client.post("/apps/echo/sink", content=body(), headers={"Content-Length": str(SIZE)},
                           timeout=120)
    assert response.status_code == 200
    assert response.json() == {"length": SIZE, "sha256": digest.hexdigest()}
    assert _peak_rss_mib() - before < 48, "the proxy held the upload in memory"


def test_every_request_leaves_an_access_record(echo, browser_for, worker):
    client = browser_for(worker)
    client.post("/apps/echo/sink?x=1", content=b"12345")
    browser_for().get("/apps/echo/private")
    client.get("/apps/echo/../x")  # refused before any decision: still recorded
    access_log.flush()
    rows = {r.path: r for r in AccessRecord.objects.filter(resource="echo")}
    sink = rows["/sink?x=1"]
    assert (sink.actor, sink.method, sink.status, sink.decision, sink.bytes_in) == (
        "wendy", "POST", 200, "allow", 5)
    assert sink.bytes_out > 0 and sink.duration_ms > 0
    anonymous = rows["/private"]
    assert (anonymous.actor, anonymous.status, anonymous.decision) == ("", 302, "login")


def test_records_queued_at_shutdown_are_written(db):
    from streaming.proxy.records import AccessEntry, AccessLog

    log = AccessLog(batch_size=1000, interval=3600)
    for i in range(250):
        log.add(AccessEntry("wendy", "echo", "GET", f"/{i}", 200, "allow", 0, 10, 1.0))
    assert AccessRecord.objects.count() == 0  # batched, not written per request
    log.close()
    assert AccessRecord.objects.filter(resource="echo").count() == 250
