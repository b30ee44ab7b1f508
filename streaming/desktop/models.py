"""Stream sessions (one per opened desktop) and the vault of target credentials."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

__all__ = ["EndReason", "PortalSignIn", "StreamSession", "StreamWatch", "TargetCredential"]


class EndReason(models.TextChoices):
    CLOSED = "closed", "Closed by the user"
    TARGET_CLOSED = "target_closed", "The target ended the connection"
    TARGET_REFUSED = "target_refused", "The target refused the stored sign-in"
    TARGET_UNAVAILABLE = "target_unavailable", "The target was not reached or refused the sign-in"
    REVOKED = "revoked", "Access was revoked"
    KILLED = "killed", "Ended by an admin"
    IDLE = "idle", "Idle for too long"
    MAX_DURATION = "max_duration", "Maximum duration reached"
    STEP_UP_TIMEOUT = "step_up_timeout", "No fresh code in time"
    SIGNED_OUT = "signed_out", "The portal session ended"
    PROTOCOL_ERROR = "protocol_error", "The browser sent something not allowed"
    GUACD_ERROR = "guacd_error", "The desktop service failed"
    TICKET_UNUSED = "ticket_unused", "Never connected"


class StreamSession(models.Model):
    """One pixel-streamed session: who, what, under which obligations, how it ended."""

    class State(models.TextChoices):
        PENDING = "pending", "Ticket issued"
        LIVE = "live", "Live"
        ENDED = "ended", "Ended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                             related_name="stream_sessions")
    resource = models.ForeignKey("tiers.Resource", on_delete=models.PROTECT, related_name="stream_sessions")
    tier_name = models.CharField(max_length=32, help_text="The resource's tier when the session opened.")
    obligations = models.JSONField(default=dict, help_text="What the decision obliged this session to do.")
    client_address = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    ticket_hash = models.CharField(max_length=64, blank=True,
                                   help_text="SHA-256 of the one-time tunnel ticket; cleared when used.")
    ticket_expires_at = models.DateTimeField(null=True, blank=True)
    guacd_connection_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=20, choices=EndReason.choices, blank=True)
    end_message = models.CharField(max_length=300, blank=True, help_text="What the user was told.")
    ended_by = models.CharField(max_length=150, blank=True,
                                help_text="Who ended it: a username, or 'portal' for policy.")
    bytes_to_browser = models.BigIntegerField(default=0)
    bytes_from_browser = models.BigIntegerField(default=0)
    recording_path = models.CharField(max_length=500, blank=True)
    recording_size = models.BigIntegerField(null=True, blank=True)
    recording_sha256 = models.CharField(max_length=64, blank=True)
    typescript_path = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "created_at"])]
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"{self.resource_id}/{self.id}"

    @property
    def is_live(self) -> bool:
        return self.state == self.State.LIVE


class StreamWatch(models.Model):
    """An admin's read-only view of someone's live session: who watched, when, for how long."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    stream = models.ForeignKey(StreamSession, on_delete=models.PROTECT, related_name="watches")
    watcher = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                related_name="stream_watches")
    client_address = models.CharField(max_length=64, blank=True)
    ticket_hash = models.CharField(max_length=64, blank=True,
                                   help_text="SHA-256 of the one-time watch ticket; cleared when used.")
    ticket_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_message = models.CharField(max_length=300, blank=True, help_text="What the watcher was told.")

    class Meta:
        ordering = ["-created_at"]
        default_permissions = ()

    def __str__(self) -> str:
        return f"watch {self.id} of {self.stream_id}"


class TargetCredential(models.Model):
    """A target's login, sealed by the vault; opened only to build the guacd handshake."""

    resource = models.OneToOneField("tiers.Resource", on_delete=models.CASCADE, related_name="credential")
    sealed = models.TextField(help_text="Fernet token of the username, password and key (JSON).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"credential for resource {self.resource_id}"

    def __repr__(self) -> str:
        return f"<TargetCredential resource={self.resource_id}>"


class PortalSignIn(models.Model):
    """Which portal session key one sign-in lives under now.

    A step-up rotates the session key (against fixation); live desktops are bound to the
    sign-in, kept in the session's data, and follow it here. Sign-out, a lock or a deleted
    session still end them: the key named here must exist and still carry this sign-in.
    """

    id = models.CharField(primary_key=True, max_length=64,
                          help_text="Random id kept in the session's data (signins.SIGN_IN_KEY).")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    session_key = models.CharField(max_length=40, help_text="The key the sign-in was last saved under.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"sign-in of user {self.user_id}"

    def __repr__(self) -> str:
        return f"<PortalSignIn user={self.user_id}>"  # the session key is a credential: never printed
