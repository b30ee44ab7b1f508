"""The three roles, as Django groups holding the portal's permissions."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, Permission

__all__ = ["ADMIN", "AUDITOR", "EMPLOYEE", "ROLE_PERMISSIONS", "ensure_roles", "roles_of"]

EMPLOYEE = "employee"
ADMIN = "admin"
AUDITOR = "auditor"

ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    EMPLOYEE: ("use_portal",),
    ADMIN: ("use_portal", "manage_catalog", "approve_access", "manage_sessions"),
    AUDITOR: ("view_audit",),
}
# Admins also edit the catalog in Django admin (its history and audit hooks are in tiers/admin.py).
ADMIN_MODEL_PERMISSIONS = ("tiers",)


def ensure_roles() -> dict[str, Group]:
    """Create the role groups and give them exactly their permissions (idempotent)."""
    groups = {}
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        perms = Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames)
        if role == ADMIN:
            perms = perms | Permission.objects.filter(content_type__app_label__in=ADMIN_MODEL_PERMISSIONS)
        group.permissions.set(perms)
        groups[role] = group
    return groups


def ensure_roles_after_migrate(**kwargs: Any) -> None:
    ensure_roles()


def roles_of(user: AbstractBaseUser | AnonymousUser) -> set[str]:
    """The role names a user holds."""
    if not user.is_authenticated:
        return set()
    return set(user.groups.filter(name__in=ROLE_PERMISSIONS).values_list("name", flat=True))
