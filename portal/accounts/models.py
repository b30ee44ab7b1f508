"""Portal-wide permissions that belong to no single model (the roles are groups holding them)."""

from django.conf import settings
from django.db import models

__all__ = ["AuthenticatorReset", "PortalPermission"]


class PortalPermission(models.Model):
    """Carrier of the portal's role permissions; it has no table."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("use_portal", "Open the resources one is allowed to reach"),
            ("manage_catalog", "Define tiers and tag resources"),
            ("approve_access", "Approve or deny just-in-time access requests"),
            ("manage_sessions", "Lock users and devices, kill live sessions"),
            ("view_audit", "Read the audit trail, session logs and recordings"),
        ]

    def __str__(self) -> str:
        return "portal permission"


class AuthenticatorReset(models.Model):
    """A lost-device reset of one person's authenticators, waiting for a second admin.

    Removing every second factor of a person hands her account to whoever holds her password
    next, so one admin only asks (with a reason); another admin approves before anything is
    removed (``portal.accounts.resets``). Rows are kept as the record of who asked and who
    approved; the audit chain has the same steps.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Waiting for a second admin"
        APPLIED = "applied", "Approved and applied"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired unapproved"

    person = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                               related_name="authenticator_resets",
                               help_text="Whose authenticators are removed.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+",
                                     help_text="The admin who asked; they cannot approve it.")
    reason = models.CharField(max_length=200, help_text="Why (e.g. phone lost), shown to the approver.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(help_text="Unapproved by then, the request lapses.")
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+", help_text="The second admin (approved or cancelled).")
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"authenticator reset of {self.person_id} ({self.state})"
