"""Session hosts and their slots: disposable sandboxes a high-risk session runs in.

A session host is a separate process (``manage.py session_host``) that keeps a few warm
slots and reports them here; the portal assigns a ready slot to one session, and the host
wipes and replaces it when the session ends (docs/decisions/0023-isolated-sessions.md).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

__all__ = ["IsolatedDesktop", "SessionHost", "Slot"]


class SessionHost(models.Model):
    """One running ``session_host`` process and what it offers."""

    name = models.CharField(max_length=64, unique=True, help_text="Unique per host process.")
    address = models.CharField(max_length=100, default="127.0.0.1",
                               help_text="Where guacd reaches this host's slots.")
    capacity = models.PositiveSmallIntegerField(default=0, help_text="Slots it keeps.")
    pid = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now,
                                        help_text="Last sign of life; a silent host gets no sessions.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def alive(self) -> bool:
        stale = timedelta(seconds=settings.PORTAL_SESSION_HOST_STALE_SECONDS)
        return timezone.now() - self.heartbeat_at < stale


class Slot(models.Model):
    """A sandbox with its own X server and VNC server, used by at most one session, once."""

    class State(models.TextChoices):
        WARMING = "warming", "warming up"
        READY = "ready", "ready"
        ASSIGNED = "assigned", "in use"
        RELEASED = "released", "ending"
        WIPING = "wiping", "being wiped"
        FAILED = "failed", "failed"

    host = models.ForeignKey(SessionHost, on_delete=models.CASCADE, related_name="slots")
    index = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.WARMING)
    generation = models.PositiveIntegerField(default=0, help_text="Bumped each time the slot is made anew.")
    port = models.PositiveIntegerField(null=True, blank=True, help_text="VNC, on the host's address.")
    sealed_password = models.TextField(blank=True, help_text="The slot's VNC password, sealed by the vault.")
    session_id = models.CharField(max_length=64, blank=True, db_index=True,
                                  help_text="The stream session using the slot.")
    launch = models.JSONField(default=dict, blank=True, help_text="What to start in the slot.")
    launched = models.BooleanField(default=False)
    assigned_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["host", "index"]
        constraints = [models.UniqueConstraint(fields=["host", "index"], name="one_slot_per_index")]

    def __str__(self) -> str:
        return f"{self.host.name}#{self.index} ({self.state})"


class IsolatedDesktop(models.Model):
    """A desktop resource that runs a desktop image in a fresh slot for every session, instead
    of a fixed host: two users never share it, and nothing in it can read the portal."""

    resource = models.OneToOneField("tiers.Resource", on_delete=models.CASCADE,
                                    related_name="isolated_desktop")
    image = models.CharField(max_length=32,
                             help_text="A name from PORTAL_SESSION_IMAGES (e.g. terminal).")

    def __str__(self) -> str:
        return f"{self.resource.slug}: {self.image}"
