"""Passkeys as django-otp devices, and the proof a passkey gave for one held action.

A :class:`PasskeyDevice` is a WebAuthn credential: django-otp's ``Device`` (so
``django_otp.login``, ``is_verified`` and the OTP middleware treat it like TOTP), with the
public key and the signature counter that lets a cloned authenticator be noticed.
"""

from __future__ import annotations

from django.db import models
from django_otp.models import Device, TimestampMixin

__all__ = ["ActionProof", "PasskeyDevice"]


class PasskeyDevice(TimestampMixin, Device):
    """One registered passkey of one user (a user may hold several, each named)."""

    credential_id = models.CharField(
        max_length=1400, unique=True,
        help_text="The credential's id, base64url (at most 1023 bytes per WebAuthn).")
    public_key = models.BinaryField(help_text="The credential's COSE public key.")
    sign_count = models.PositiveBigIntegerField(
        default=0, help_text="The authenticator's signature counter at the last use; a counter "
                             "that goes back means a cloned authenticator.")
    user_handle = models.CharField(
        max_length=128, help_text="The WebAuthn user id (random, base64url), the same for all "
                                  "of a user's passkeys; a discoverable passkey returns it.")
    aaguid = models.CharField(max_length=36, blank=True, help_text="The authenticator's model id.")
    transports = models.JSONField(default=list, blank=True,
                                  help_text="How the browser reached it (internal, usb, hybrid...).")
    backed_up = models.BooleanField(default=False,
                                    help_text="A synced passkey (backed up to a cloud account).")

    class Meta:
        ordering = ["user", "created_at", "id"]

    def verify_token(self, token: object) -> bool:
        """A passkey has no typed code; it is checked by :mod:`portal.passkeys.ceremony`."""
        return False


class ActionProof(models.Model):
    """A passkey assertion that confirmed exactly one held action (a one-time step-up).

    Its presence tells the decision that the confirmation waiting for this action was made
    with a passkey (``tiers.context``); ``action_digest`` is what the WebAuthn challenge
    was derived from, so the audit trail can show which action was signed.
    """

    challenge = models.OneToOneField("tiers.ActionChallenge", on_delete=models.CASCADE,
                                     related_name="passkey_proof")
    device = models.ForeignKey(PasskeyDevice, null=True, on_delete=models.SET_NULL,
                               help_text="The passkey that signed (kept empty once it is removed).")
    action_digest = models.CharField(max_length=64, help_text="SHA-256 of the bound action.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"passkey proof for challenge {self.challenge_id}"
