"""The append-only, hash-chained audit trail.

Each :class:`AuditEvent` carries the hash of the previous event and of its own canonical
content, so a row changed, removed or slipped in breaks the chain where it happened.
:class:`ChainHead` remembers the last sequence number and hash, so cutting rows off the end
shows too. The ORM refuses updates and deletes; on PostgreSQL a trigger refuses them as well.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import models
from django.db.models import F
from django.db.models.fields.json import KeyTextTransform

__all__ = [
    "AppendOnlyError", "AuditEvent", "ChainHead", "ChainVerification", "GrantExpiryNotice", "SiemCursor",
]


class AppendOnlyError(RuntimeError):
    """Audit events are never changed or removed."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be updated")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("audit events cannot be deleted")

    _raw_delete = delete


class AuditEvent(models.Model):
    """One thing that happened: who did what to which resource, and what was decided."""

    seq = models.BigIntegerField(unique=True, help_text="Position in the chain, from 1, no gaps.")
    time = models.DateTimeField(db_index=True, help_text="When it happened (UTC).")
    actor = models.CharField(max_length=150, blank=True, db_index=True,
                             help_text="Username (or principal) who acted; empty if anonymous.")
    action = models.CharField(max_length=64, db_index=True,
                              help_text="What was attempted, e.g. login, mfa.verify, proxy.request.")
    resource = models.CharField(max_length=100, blank=True, db_index=True,
                                help_text="Slug of the resource concerned, if any.")
    outcome = models.CharField(max_length=32, db_index=True,
                               help_text="success, failure, allow, deny, step_up, isolate, ...")
    reasons = models.JSONField(default=list, blank=True,
                               help_text="Why: the rules that fired, with their values.")
    client_address = models.CharField(max_length=64, blank=True)
    zone = models.CharField(max_length=64, blank=True, help_text="Network zone of the client.")
    device = models.CharField(max_length=128, blank=True, help_text="Device identity, if known.")
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    detail = models.JSONField(default=dict, blank=True, help_text="Further facts of the event.")
    prev_hash = models.CharField(max_length=64, help_text="Hash of the previous event.")
    hash = models.CharField(max_length=64, unique=True,
                            help_text="SHA-256 over prev_hash and this event's canonical content.")

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["actor", "time"]), models.Index(fields=["resource", "time"]),
            # The auditor's search filters on one column and pages newest first by time
            # (portal/auditor/search.py); one (column, time) index per filter keeps a page of
            # a million-event trail an index range scan. Free text has a trigram index on
            # PostgreSQL (migration 0004).
            models.Index(fields=["outcome", "time"], name="audit_outcome_time_idx"),
            models.Index(fields=["action", "time"], name="audit_action_time_idx"),
            models.Index(fields=["zone", "time"], name="audit_zone_time_idx"),
            models.Index(KeyTextTransform("tier", "detail"), F("time"), name="audit_tier_time_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.time:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("audit events cannot be updated")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be deleted")


class ChainHead(models.Model):
    """The single row that serialises appends and remembers where the chain ends."""

    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self) -> str:
        return f"chain head #{self.seq}"


class ChainVerification(models.Model):
    """One run of the chain verification (the scheduled job or the command): what it found."""

    time = models.DateTimeField(db_index=True, help_text="When the verification finished.")
    ok = models.BooleanField(help_text="True when every link and every hash held.")
    checked = models.PositiveBigIntegerField(help_text="How many events were walked.")
    head_seq = models.BigIntegerField(default=0, help_text="The chain head's sequence number at the time.")
    duration_ms = models.PositiveIntegerField(default=0, help_text="How long the walk took.")
    problems = models.JSONField(default=list, blank=True,
                                help_text="Every break found, in words (empty when ok).")

    class Meta:
        ordering = ["-time", "-id"]
        get_latest_by = "time"

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {'ok' if self.ok else 'BROKEN'} ({self.checked} events)"


class SiemCursor(models.Model):
    """How far the trail has been forwarded to one SIEM destination (webhook, syslog).

    The cursor only moves after the destination took the batch, so events written while the
    receiver is down are sent once it is back (at-least-once; each event carries its hash).
    """

    destination = models.CharField(max_length=32, unique=True, help_text="webhook or syslog.")
    last_seq = models.BigIntegerField(default=0, help_text="Last event sequence number delivered.")
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True,
                                  help_text="Why the last attempt failed; empty after a success.")
    last_error_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.destination} at #{self.last_seq}"


class GrantExpiryNotice(models.Model):
    """Marks a just-in-time grant whose expiry was written to the trail (``access.expired``).

    Kept here, not on the grant, so the catalog's model stays the catalog's; a plain id (no
    foreign key) so the notice outlives the grant like the audit event it points to.
    """

    grant_id = models.BigIntegerField(unique=True, help_text="tiers.AccessGrant primary key.")
    event_seq = models.BigIntegerField(help_text="Sequence number of the access.expired event.")
    noticed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"grant {self.grant_id} expired (event #{self.event_seq})"
