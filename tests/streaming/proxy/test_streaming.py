"""Bodies stream both ways in bounded memory; every request leaves an access record."""

from __future__ import annotations

import hashlib
import resource
import time

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


def test_a_database_blip_loses_no_record_and_the_writer_goes_on(transactional_db, monkeypatch):
    from django.db import OperationalError

    from streaming.proxy import records
    from streaming.proxy.records import AccessEntry, AccessLog

    real_insert, calls = records._insert, []

    def insert_after_one_failure(model, batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise OperationalError("database unavailable")
        real_insert(model, batch)

    monkeypatch.setattr(records, "_insert", insert_after_one_failure)
    log = AccessLog(batch_size=1000, interval=0.05)
    for i in range(10):
        log.add(AccessEntry("wendy", "echo", "GET", f"/blip/{i}", 200, "allow", 0, 10, 1.0))
    deadline = time.monotonic() + 5
    while AccessRecord.objects.filter(path__startswith="/blip/").count() < 10:
        assert time.monotonic() < deadline, calls
        time.sleep(0.05)
    assert calls[0] == 10 and log.pending() == 0
    log.close()
