"""Exports of a search as CSV or JSON Lines, each pinned to a chain head with a manifest.

The JSON Lines records are the ledger's OCSF mapping (:func:`portal.audit.ocsf.ocsf_event`),
the same the SIEM receives. Exports are generators
over ``.iterator(chunk_size=...)``: memory stays flat for a million rows. Every export is
pinned to the chain head at the moment it was asked for (``seq <= head``); the trail is
append-only, so the same filter and head always give the same rows and the same bytes,
which is what lets the manifest be recomputed and checked later. Fields: docs/audit-export.md.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from portal.audit.models import AuditEvent, ChainHead
from portal.audit.ocsf import OCSF_VERSION, ocsf_event
from portal.auditor.search import AuditFilter, filter_events

__all__ = [
    "CSV_COLUMNS", "ChainHeadAt", "chain_head", "content_digest", "csv_lines",
    "export_events", "head_at", "jsonl_lines", "manifest",
]


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


# --- exports -----------------------------------------------------------------------------

CSV_COLUMNS = (
    "metadata.sequence", "time_dt", "class_uid", "class_name", "activity_id", "activity_name",
    "type_uid", "severity_id", "status_id", "status", "status_code", "status_detail",
    "actor.user.name", "src_endpoint.ip", "src_endpoint.zone", "device.uid", "resource.uid",
    "resource.tier", "metadata.correlation_uid", "portal.action", "reasons", "detail",
    "prev_hash", "hash",
)
# A cell starting with one of these is a formula to a spreadsheet; usernames in failed
# sign-ins are typed by anyone, so they are defused with a leading apostrophe (CSV only).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_row(event: AuditEvent) -> list[str]:
    rec = ocsf_event(event)
    resource = (rec.get("resources") or [{}])[0]
    values = [
        event.seq, rec["time_dt"], rec["class_uid"], rec["class_name"], rec["activity_id"],
        rec["activity_name"], rec["type_uid"], rec["severity_id"], rec["status_id"], rec["status"],
        event.outcome, rec["status_detail"], event.actor, rec.get("src_endpoint", {}).get("ip", ""),
        event.zone, event.device, event.resource, resource.get("data", {}).get("tier", ""),
        event.request_id, event.action, _json(event.reasons), _json(event.detail),
        event.prev_hash, event.hash,
    ]
    return [_cell(v) for v in values]


@dataclass(frozen=True)
class ChainHeadAt:
    """Where the chain ended when an export was asked for."""

    seq: int
    hash: str


def chain_head() -> ChainHeadAt:
    """The chain head now (sequence number and hash of the last event)."""
    head = ChainHead.objects.filter(pk=1).values_list("seq", "hash").first()
    return ChainHeadAt(*head) if head else ChainHeadAt(0, "0" * 64)


def head_at(seq: int) -> ChainHeadAt | None:
    """The chain head as it was when event ``seq`` was the last one (None if it never was)."""
    if seq == 0:
        return ChainHeadAt(0, "0" * 64)
    digest = AuditEvent.objects.filter(seq=seq).values_list("hash", flat=True).first()
    return ChainHeadAt(seq, digest) if digest else None


def export_events(criteria: AuditFilter, head: ChainHeadAt) -> Iterator[AuditEvent]:
    """The matching events up to ``head``, in chain order, fetched in bounded chunks."""
    chunk = settings.PORTAL_AUDIT_EXPORT_CHUNK_SIZE
    return filter_events(criteria).filter(seq__lte=head.seq).order_by("seq").iterator(chunk_size=chunk)


def csv_lines(criteria: AuditFilter, head: ChainHeadAt) -> Iterator[bytes]:
    """The CSV export, a header line then one line per event (UTF-8)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for event in export_events(criteria, head):
        writer.writerow(_csv_row(event))
        if buffer.tell() > 32_768:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def manifest(criteria: AuditFilter, head: ChainHeadAt, *, export_format: str, rows: int,
             content_sha256: str | None = None, generated_by: str = "") -> dict[str, Any]:
    """What an export holds: the filter, the chain head it is pinned to, and its row count."""
    body: dict[str, Any] = {
        "format": export_format,
        "filter": criteria.as_params(),
        "rows": rows,
        "chain_head": {"seq": head.seq, "hash": head.hash},
        "ocsf_version": OCSF_VERSION,
        "generated_at": timezone.now().isoformat(timespec="seconds"),
        "generated_by": generated_by,
    }
    if content_sha256 is not None:
        body["content_sha256"] = content_sha256
    return body


def _jsonl_records(criteria: AuditFilter, head: ChainHeadAt) -> Iterator[bytes]:
    for event in export_events(criteria, head):
        yield (_json(ocsf_event(event)) + "\n").encode()


def jsonl_lines(criteria: AuditFilter, head: ChainHeadAt, *, generated_by: str = "") -> Iterator[bytes]:
    """The JSON Lines export: one OCSF record a line, then one ``{"manifest": {...}}`` line.

    The manifest's ``content_sha256`` covers every byte before the manifest line.
    """
    digest = hashlib.sha256()
    rows = 0
    block: list[bytes] = []
    size = 0
    for line in _jsonl_records(criteria, head):
        digest.update(line)
        rows += 1
        block.append(line)
        size += len(line)
        if size > 32_768:
            yield b"".join(block)
            block, size = [], 0
    final = manifest(criteria, head, export_format="jsonl", rows=rows,
                     content_sha256=digest.hexdigest(), generated_by=generated_by)
    block.append((_json({"manifest": final}) + "\n").encode())
    yield b"".join(block)


def content_digest(export_format: str, criteria: AuditFilter, head: ChainHeadAt) -> tuple[int, str]:
    """Row count and SHA-256 of an export's rows, recomputed (CSV: the whole file; JSON
    Lines: every line before the manifest). Reads every matching row once."""
    digest = hashlib.sha256()
    chunks = csv_lines(criteria, head) if export_format == "csv" else _jsonl_records(criteria, head)
    for chunk in chunks:
        digest.update(chunk)
    return filter_events(criteria).filter(seq__lte=head.seq).count(), digest.hexdigest()
