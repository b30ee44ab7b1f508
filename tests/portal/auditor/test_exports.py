"""Exports: streamed CSV and JSON Lines in OCSF terms, pinned to a chain head, with a manifest."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest
from asgiref.sync import async_to_sync
from django.http import StreamingHttpResponse
from django.test import AsyncRequestFactory

from portal.audit.chain import record
from portal.audit.models import AuditEvent, ChainHead
from portal.audit.ocsf import ocsf_event
from portal.auditor import views
from portal.auditor.exports import CSV_COLUMNS

pytestmark = pytest.mark.django_db


@pytest.fixture
def trail(db):
    return [
        record("decision", outcome="deny", actor="bob", resource="payroll", zone="internet",
               client_address="203.0.113.9", device="dev-1", request_id="req-1",
               detail={"tier": "high", "action": "http"},
               reasons=[{"rule": "zone_not_allowed", "message": "Not from the internet.", "values": {}}]),
        record("decision", outcome="allow", actor="alice", resource="wiki", zone="office",
               client_address="10.0.0.5", detail={"tier": "low"}),
        record("login.password", outcome="failure", actor="=HYPERLINK(\"http://evil\")",
               client_address="203.0.113.9"),
        record("decision", outcome="deny", actor="carol", resource="vault", detail={"tier": "critical"},
               reasons=[{"rule": "approval_required", "message": "Needs an approved request, “now”."}]),
    ]


def _body(response: StreamingHttpResponse) -> bytes:
    assert response.streaming
    return b"".join(response.streaming_content)


# --- OCSF mapping --------------------------------------------------------------------------

OCSF_CLASSES = [
    ("login.password", "success", 3002, 1, "Logon", 1),
    ("login.password", "failure", 3002, 1, "Logon", 2),
    ("mfa.verify", "success", 3002, 1, "Logon", 1),
    ("logout", "success", 3002, 2, "Logoff", 1),
    ("mfa.enrol", "success", 3001, 10, "MFA Factor Enable", 1),
    ("decision", "allow", 6004, 1, "Access Grant", 1),
    ("decision", "deny", 6004, 2, "Access Deny", 2),
    ("decision", "step_up", 6004, 99, "Other", 2),
    ("access.expired", "expired", 3005, 2, "Revoke Privileges", 1),
    ("admin.delete", "success", 3004, 4, "Delete", 1),
    ("audit.view", "success", 6003, 2, "Read", 1),
    ("audit.forbidden", "deny", 6003, 2, "Read", 2),
    ("audit.chain_broken", "alert", 2004, 1, "Create", 1),
    ("something.new", "whatever", 0, 99, "Other", 99),
]


@pytest.mark.parametrize(("action", "outcome", "class_uid", "activity_id", "activity", "status_id"),
                         OCSF_CLASSES)
def test_events_map_onto_ocsf_classes(db, action, outcome, class_uid, activity_id, activity, status_id):
    rec = ocsf_event(record(action, outcome=outcome, actor="alice"))
    assert (rec["class_uid"], rec["activity_id"], rec["activity_name"], rec["status_id"]) == (
        class_uid, activity_id, activity, status_id)
    assert rec["type_uid"] == class_uid * 100 + activity_id
    assert rec["category_uid"] == class_uid // 1000


def test_an_ocsf_record_carries_who_where_what_why_and_the_chain(trail):
    event = trail[0]
    rec = ocsf_event(event)
    assert rec["actor"] == {"user": {"name": "bob"}}
    assert rec["src_endpoint"] == {"ip": "203.0.113.9", "zone": "internet"}
    assert rec["device"] == {"uid": "dev-1"}
    assert rec["resources"] == [{"uid": "payroll", "type": "portal.resource", "data": {"tier": "high"}}]
    assert rec["status"] == "Failure" and rec["status_detail"] == "Not from the internet."
    assert rec["time"] == int(event.time.timestamp() * 1000)
    assert rec["metadata"]["sequence"] == event.seq and rec["metadata"]["uid"] == event.hash
    assert rec["metadata"]["correlation_uid"] == "req-1"
    assert rec["unmapped"]["reasons"][0]["rule"] == "zone_not_allowed"
    assert (rec["unmapped"]["prev_hash"], rec["unmapped"]["hash"]) == (event.prev_hash, event.hash)


# --- CSV -----------------------------------------------------------------------------------

def test_csv_export_streams_the_search_with_a_manifest_header(auditor_client, trail):
    response = auditor_client.get("/audit/export.csv", {"outcome": "deny"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment;" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(_body(response).decode())))
    assert [int(r["metadata.sequence"]) for r in rows] == [trail[0].seq, trail[3].seq]
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0]["actor.user.name"] == "bob" and rows[0]["resource.tier"] == "high"
    assert rows[0]["class_uid"] == "6004" and rows[0]["activity_name"] == "Access Deny"
    assert json.loads(rows[0]["reasons"])[0]["rule"] == "zone_not_allowed"
    assert rows[1]["status_detail"] == "Needs an approved request, “now”."
    manifest = json.loads(response["X-Export-Manifest"])
    head = ChainHead.objects.get(pk=1)
    assert manifest["rows"] == 2
    assert manifest["filter"] == {"outcome": "deny"}
    assert manifest["chain_head"]["hash"] == AuditEvent.objects.get(seq=manifest["chain_head"]["seq"]).hash
    assert manifest["chain_head"]["seq"] == head.seq - 1  # pinned before its own audit.export event


def test_the_manifest_endpoint_recomputes_the_csv_digest(auditor_client, trail):
    response = auditor_client.get("/audit/export.csv", {"actor": "bob"})
    body = _body(response)
    header = json.loads(response["X-Export-Manifest"])
    record("decision", outcome="deny", actor="bob")  # later events do not change that export
    check = auditor_client.get(header["manifest_url"])
    assert check.status_code == 200
    manifest = check.json()["manifest"]
    assert manifest["content_sha256"] == hashlib.sha256(body).hexdigest()
    assert manifest["rows"] == header["rows"] == 1
    assert manifest["chain_head"] == header["chain_head"]
    assert AuditEvent.objects.filter(action="audit.export", detail__format="csv-manifest").exists()


def test_csv_cells_that_a_spreadsheet_would_run_are_defused(auditor_client, trail):
    rows = list(csv.DictReader(io.StringIO(_body(auditor_client.get("/audit/export.csv")).decode())))
    actors = [r["actor.user.name"] for r in rows]
    assert "'=HYPERLINK(\"http://evil\")" in actors
    assert not any(a.startswith(("=", "+", "-", "@")) for a in actors)


# --- JSON Lines ----------------------------------------------------------------------------

def test_jsonl_export_ends_with_its_manifest(auditor_client, auditor, trail):
    response = auditor_client.get("/audit/export.jsonl", {"tier": "high"})
    assert response["Content-Type"].startswith("application/x-ndjson")
    lines = _body(response).decode().splitlines(keepends=True)
    records = [json.loads(line) for line in lines[:-1]]
    manifest = json.loads(lines[-1])["manifest"]
    assert [r["metadata"]["sequence"] for r in records] == [trail[0].seq]
    assert manifest["rows"] == 1 and manifest["format"] == "jsonl"
    assert manifest["filter"] == {"tier": "high"}
    assert manifest["generated_by"] == auditor.username
    assert manifest["content_sha256"] == hashlib.sha256("".join(lines[:-1]).encode()).hexdigest()
    head_seq = manifest["chain_head"]["seq"]
    assert manifest["chain_head"]["hash"] == AuditEvent.objects.get(seq=head_seq).hash
    export_event = AuditEvent.objects.filter(action="audit.export").latest("seq")
    assert export_event.seq == head_seq + 1
    assert export_event.detail == {"format": "jsonl", "filter": {"tier": "high"}, "head_seq": head_seq}


def test_an_export_holds_nothing_after_its_head(auditor_client, trail):
    lines = _body(auditor_client.get("/audit/export.jsonl")).decode().splitlines()
    manifest = json.loads(lines[-1])["manifest"]
    seqs = [json.loads(line)["metadata"]["sequence"] for line in lines[:-1]]
    assert seqs == list(range(1, manifest["chain_head"]["seq"] + 1))
    assert manifest["rows"] == len(seqs)


def test_exports_read_the_trail_in_small_chunks(auditor_client, settings, trail):
    settings.PORTAL_AUDIT_EXPORT_CHUNK_SIZE = 2
    for i in range(7):
        record("decision", outcome="deny", actor="pat", resource=f"r{i}")
    lines = _body(auditor_client.get("/audit/export.jsonl", {"actor": "pat"})).decode().splitlines()
    assert json.loads(lines[-1])["manifest"]["rows"] == 7 == len(lines) - 1


def test_under_asgi_the_export_streams_asynchronously(auditor, trail):
    request = AsyncRequestFactory().get("/audit/export.jsonl", {"actor": "bob"})
    request.user = auditor
    response = views.export(request, export_format="jsonl")
    assert response.is_async  # a sync iterator would be read whole into memory under ASGI

    async def read() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    lines = async_to_sync(read)().decode().splitlines()
    assert json.loads(lines[0])["metadata"]["sequence"] == trail[0].seq
    assert json.loads(lines[-1])["manifest"]["rows"] == 1


@pytest.mark.parametrize("query", [
    {"since": "not a time"},
    {"since": "2030-01-02T00:00", "until": "2030-01-01T00:00"},
])
def test_a_bad_filter_exports_nothing(auditor_client, trail, query):
    response = auditor_client.get("/audit/export.csv", query)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_filter"


@pytest.mark.parametrize("query", [{"format": "xml", "head": "1"}, {"format": "csv"}, {"format": "csv", "head": "x"}])
def test_the_manifest_endpoint_wants_a_format_and_a_head(auditor_client, trail, query):
    assert auditor_client.get("/audit/export/manifest.json", query).status_code == 400


def test_the_manifest_endpoint_refuses_a_head_that_does_not_exist(auditor_client, trail):
    response = auditor_client.get("/audit/export/manifest.json", {"format": "csv", "head": "99999"})
    assert response.status_code == 404
