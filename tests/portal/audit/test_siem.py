"""Forwarding to a SIEM: nothing lost while the receiver is down, nothing sent twice after."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.cache import cache

from portal.audit.chain import record
from portal.audit.models import AuditEvent, SiemCursor
from portal.audit.siem import (
    SiemUnavailable,
    SyslogDestination,
    WebhookDestination,
    configured_destinations,
    forward_all,
    forward_pending,
)
from portal.audit.tasks import forward_events_to_siem

pytestmark = pytest.mark.django_db


class Receiver(ThreadingHTTPServer):
    """A SIEM's HTTP collector: keeps what it is sent, or answers with ``status``."""

    def __init__(self, port: int = 0) -> None:
        self.batches: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        super().__init__(("127.0.0.1", port), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/ingest"

    def records(self) -> list[dict]:
        return [json.loads(line) for _, body in self.batches for line in body.decode().splitlines()]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.status == 200:
            self.server.batches.append((dict(self.headers), body))
        self.send_response(self.server.status)
        if self.server.status == 302:
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def _events(n: int, actor: str = "alice") -> list[AuditEvent]:
    return [record("decision", outcome="deny", actor=actor, resource=f"r{i}", detail={"tier": "high"})
            for i in range(n)]


def test_webhook_gets_every_event_once_as_ocsf_json_lines_in_batches(receiver):
    events = _events(5)
    result = forward_pending(WebhookDestination(receiver.url, token="s3cret"), batch_size=2)
    assert result.sent == 5 and result.last_seq == events[-1].seq
    assert len(receiver.batches) == 3
    headers = receiver.batches[0][0]
    assert headers["Content-Type"] == "application/x-ndjson"
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["X-Portal-Audit-Range"] == f"{events[0].seq}-{events[1].seq}"
    records = receiver.records()
    assert [r["metadata"]["sequence"] for r in records] == [e.seq for e in events]
    assert records[0]["class_uid"] == 6004 and records[0]["actor"]["user"]["name"] == "alice"
    assert forward_pending(WebhookDestination(receiver.url), batch_size=2).sent == 0
    assert len(receiver.batches) == 3


def test_nothing_is_lost_while_the_receiver_is_down():
    port = _free_port()
    url = f"http://127.0.0.1:{port}/ingest"
    first = _events(3)
    with pytest.raises(SiemUnavailable, match="unreachable"):
        forward_pending(WebhookDestination(url, timeout=2))
    cursor = SiemCursor.objects.get(destination="webhook")
    assert cursor.last_seq == 0 and "unreachable" in cursor.last_error and cursor.last_error_at
    later = _events(2, actor="bob")
    server = Receiver(port)
    try:
        result = forward_pending(WebhookDestination(url))
        assert [r["metadata"]["sequence"] for r in server.records()] == [e.seq for e in first + later]
        assert result.last_seq == later[-1].seq
        cursor.refresh_from_db()
        assert cursor.last_seq == later[-1].seq and cursor.last_error == "" and cursor.last_success_at
    finally:
        server.stop()


@pytest.mark.parametrize(("status", "why"), [(503, "HTTP 503"), (500, "HTTP 500"), (302, "HTTP 302")])
def test_a_refused_or_redirected_batch_keeps_the_cursor(receiver, status, why):
    _events(2)
    receiver.status = status
    with pytest.raises(SiemUnavailable, match=why):
        forward_pending(WebhookDestination(receiver.url))
    assert SiemCursor.objects.get(destination="webhook").last_seq == 0
    receiver.status = 200
    assert forward_pending(WebhookDestination(receiver.url)).sent == 2


def test_only_one_run_forwards_to_a_destination_at_a_time(receiver):
    _events(2)
    cache.add("audit:siem:webhook:lock", "someone-else", 60)
    result = forward_pending(WebhookDestination(receiver.url))
    assert result.busy and result.sent == 0 and receiver.batches == []


def test_syslog_over_udp_gets_one_message_per_event():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(5)
        events = [*_events(2), record("login.password", outcome="success", actor="carol")]
        port = collector.getsockname()[1]
        forward_pending(SyslogDestination(f"udp://127.0.0.1:{port}"))
        messages = [collector.recv(65536).decode() for _ in events]
    # authpriv (10) * 8 + warning (4) for a denial, + info (6) for a success
    assert [m[: m.index(">") + 1] for m in messages] == ["<84>", "<84>", "<86>"]
    assert all(m.endswith("\x00") and "zt-portal-audit: " in m for m in messages)
    records = [json.loads(m.split("zt-portal-audit: ", 1)[1].rstrip("\x00")) for m in messages]
    assert [r["metadata"]["sequence"] for r in records] == [e.seq for e in events]


def test_syslog_over_tcp_frames_one_event_a_line_and_a_closed_port_keeps_the_cursor():
    _events(2)
    port = _free_port()
    with pytest.raises(SiemUnavailable, match="syslog unreachable"):
        forward_pending(SyslogDestination(f"tcp://127.0.0.1:{port}", timeout=2))
    assert SiemCursor.objects.get(destination="syslog").last_seq == 0
    received: list[bytes] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()

        def accept() -> None:
            conn, _ = listener.accept()
            with conn:
                while chunk := conn.recv(65536):
                    received.append(chunk)

        thread = threading.Thread(target=accept)
        thread.start()
        forward_pending(SyslogDestination(f"tcp://127.0.0.1:{port}"))
        thread.join(5)
    lines = b"".join(received).decode().splitlines()
    assert len(lines) == 2 and all(line.startswith("<84>zt-portal-audit: {") for line in lines)


def test_destinations_come_from_settings(settings):
    settings.PORTAL_SIEM_WEBHOOK_URL = None
    settings.PORTAL_SIEM_SYSLOG = None
    assert configured_destinations() == []
    assert forward_all() == []
    settings.PORTAL_SIEM_WEBHOOK_URL = "https://siem.example/ingest"
    settings.PORTAL_SIEM_SYSLOG = "udp://127.0.0.1:514"
    assert [d.name for d in configured_destinations()] == ["webhook", "syslog"]


def test_the_task_forwards_to_every_configured_destination(settings, receiver):
    events = _events(3)
    settings.PORTAL_SIEM_WEBHOOK_URL = receiver.url
    settings.PORTAL_SIEM_SYSLOG = None
    assert forward_events_to_siem.apply().get() == {"webhook": events[-1].seq}
    assert len(receiver.records()) == 3


def test_one_destination_down_does_not_hold_up_the_other(settings, receiver):
    events = _events(2)
    settings.PORTAL_SIEM_WEBHOOK_URL = receiver.url
    settings.PORTAL_SIEM_SYSLOG = f"tcp://127.0.0.1:{_free_port()}"
    settings.PORTAL_SIEM_TIMEOUT_SECONDS = 2
    with pytest.raises(SiemUnavailable):
        forward_all()
    assert SiemCursor.objects.get(destination="webhook").last_seq == events[-1].seq
    assert SiemCursor.objects.get(destination="syslog").last_seq == 0
