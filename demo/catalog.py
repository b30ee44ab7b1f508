"""Demo catalog: the low, high and critical tiers, and one resource of each kind.

Registered into ``seed_demo``; ports are where ``make demo`` and the test fixtures start
the demo app and targets (overridable so tests can point them at their own free ports).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group

from tiers.models import AccessMode, NetworkZone, Resource, ResourceKind, Tier

__all__ = ["DEMO_TARGETS", "seed_demo_catalog"]


def _store_login(resource: Resource, targets: dict[str, Any]) -> None:
    from streaming.desktop.vault import TargetSecret, store

    if resource.kind == ResourceKind.VNC and targets.get("vnc_password"):
        store(resource, TargetSecret(password=targets["vnc_password"]))
    elif resource.kind == ResourceKind.SSH and targets.get("ssh_password"):
        store(resource, TargetSecret(username=targets["ssh_username"], password=targets["ssh_password"]))

DEMO_TARGETS = {
    "web": "http://127.0.0.1:8801/",  # Datasette at the root of its origin (host mode)
    "vnc": "127.0.0.1:5911",
    "ssh": "127.0.0.1:2222",
}

TIERS: list[dict[str, Any]] = [
    {"name": "low", "rank": 10, "description": "Everyday internal web apps",
     "access_mode": AccessMode.PROXY, "mfa_read": None, "mfa_write": 3600, "mfa_sensitive": 0,
     "rate_limit_per_minute": 600},
    {"name": "high", "rank": 20, "description": "Production systems: pixels only, recorded",
     "access_mode": AccessMode.STREAM, "mfa_read": 900, "mfa_write": 900, "mfa_sensitive": 0,
     "recording": True, "clipboard_in": "allow", "clipboard_out": "deny", "file_transfer": "deny",
     "idle_seconds": 15 * 60, "session_max_seconds": 4 * 3600},
    {"name": "critical", "rank": 30, "description": "Crown jewels: approval, per-action MFA, watermark",
     # Opening is sensitive (a code each time); a live session asks again after 10 minutes.
     "access_mode": AccessMode.STREAM, "mfa_read": 600, "mfa_write": 0, "mfa_sensitive": 0,
     "approval_required": True, "recording": True, "watermark": True, "read_only": True,
     "clipboard_in": "deny", "clipboard_out": "deny", "file_transfer": "deny",
     "idle_seconds": 10 * 60, "session_max_seconds": 3600},
]

RESOURCES: list[dict[str, Any]] = [
    {"slug": "wiki", "name": "Team wiki", "kind": ResourceKind.WEB, "tier": "low",
     "description": "Datasette over the team's shared notes database."},
    {"slug": "ops-desktop", "name": "Ops desktop", "kind": ResourceKind.VNC, "tier": "high",
     "description": "The operations jump desktop (X11 over VNC)."},
    {"slug": "db-shell", "name": "Database host shell", "kind": ResourceKind.SSH, "tier": "critical",
     "description": "SSH to the production database host. Approval needed."},
]


def seed_demo_catalog(targets: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Create or refresh the demo tiers, zones and resources; return them for ``seed_demo --json``.

    ``targets`` (from ``scripts/demo_services.py``) says where the demo app and targets
    listen and carries the targets' logins, which go into the vault and nowhere else.
    """
    targets = {**DEMO_TARGETS, **(targets or {})}
    NetworkZone.objects.update_or_create(name="loopback", defaults={"cidrs": "127.0.0.0/8\n::1/128",
                                                                    "trusted": True})
    tiers = {}
    for spec in TIERS:
        tier, _ = Tier.objects.update_or_create(name=spec["name"], defaults={
            k: v for k, v in spec.items() if k != "name"})
        tiers[tier.name] = tier
    employee = Group.objects.get(name="employee")
    admin = Group.objects.get(name="admin")
    out = []
    for spec in RESOURCES:
        resource, _ = Resource.objects.update_or_create(slug=spec["slug"], defaults={
            "name": spec["name"], "kind": spec["kind"], "tier": tiers[spec["tier"]],
            "description": spec["description"], "upstream": targets[spec["kind"]], "enabled": True})
        resource.allowed_groups.set([employee, admin])
        _store_login(resource, targets)
        out.append({"slug": resource.slug, "tier": resource.tier.name, "kind": resource.kind,
                    "url": resource.portal_path})
    return out
