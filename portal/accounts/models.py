"""Portal-wide permissions that belong to no single model (the roles are groups holding them)."""

from django.db import models

__all__ = ["PortalPermission"]


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
