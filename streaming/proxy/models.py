"""What the proxy keeps: one access record per proxied request (allowed or not)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

__all__ = ["AccessRecord"]


class AccessRecord(models.Model):
    """Who reached which resource, how, with what answer; written in batches."""

    time = models.DateTimeField(default=timezone.now, db_index=True,
                                help_text="When the request arrived.")
    actor = models.CharField(max_length=150, blank=True, help_text="Username; empty = anonymous.")
    resource = models.CharField(max_length=63, db_index=True, help_text="Resource slug.")
    method = models.CharField(max_length=16)
    path = models.CharField(max_length=2000, help_text="Path inside the app, with the query.")
    status = models.PositiveSmallIntegerField(help_text="Status the browser received.")
    decision = models.CharField(max_length=16,
                                help_text="allow, step_up, deny, isolate, login, mfa, not_found, "
                                          "rate_limited, bad_request, error.")
    bytes_in = models.BigIntegerField(default=0, help_text="Request body bytes sent upstream.")
    bytes_out = models.BigIntegerField(default=0, help_text="Response body bytes sent to the browser.")
    duration_ms = models.FloatField(help_text="From first byte in to last byte out.")
    client_address = models.CharField(max_length=45, blank=True)
    request_id = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [models.Index(fields=["actor", "time"])]

    def __str__(self) -> str:
        return f"{self.actor or '-'} {self.method} /apps/{self.resource}{self.path} {self.status}"
