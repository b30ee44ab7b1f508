"""The append-only, hash-chained audit trail.

Each :class:`AuditEvent` carries the hash of the previous event and of its own canonical
content, so a row changed, removed or slipped in breaks the chain where it happened.
:class:`ChainHead` remembers the last sequence number and hash, so cutting rows off the end
shows too. The ORM refuses updates and deletes; on PostgreSQL a trigger refuses them as well.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import models

__all__ = ["AppendOnlyError", "AuditEvent", "ChainHead"]


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
        indexes = [models.Index(fields=["actor", "time"]), models.Index(fields=["resource", "time"])]

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
