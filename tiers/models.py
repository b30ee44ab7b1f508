"""The catalog: tiers, resources, network zones, and just-in-time access.

Admins tag each resource with a tier; the tier says how it is reached (identity-aware
proxy, pixel streaming, or not at all) and what is re-checked. The decision reads these
through :mod:`tiers.context`, never directly.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from tiers.rules import MAX_SMALL, TIER_RULES, Kind, TierRule, combination_problems
from tiers.types import ActionClass

__all__ = [
    "AccessGrant", "AccessRequest", "ActionChallenge", "ActionRule", "NetworkZone", "PolicyChangeRequest",
    "Resource", "Tier", "TierChange",
]

slug_validator = RegexValidator(r"^[a-z0-9][a-z0-9-]{0,62}$",
                                "Use lowercase letters, digits and dashes (at most 63).")


class AccessMode(models.TextChoices):
    PROXY = "proxy", "Identity-aware proxy"
    STREAM = "stream", "Pixel streaming"
    DENY = "deny", "No access"


class ResourceKind(models.TextChoices):
    WEB = "web", "Web app"
    VNC = "vnc", "Desktop (VNC)"
    SSH = "ssh", "Shell (SSH)"
    RDP = "rdp", "Desktop (RDP)"


class NetworkZone(models.Model):
    """A named set of networks, e.g. office or VPN. Clients match the most specific one."""

    name = models.CharField(max_length=64, unique=True, validators=[slug_validator])
    cidrs = models.TextField(help_text="CIDRs, one per line or comma-separated.")
    trusted = models.BooleanField(default=False, help_text="A managed network (office, VPN).")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        parts = [p.strip() for p in self.cidrs.replace(",", "\n").splitlines() if p.strip()]
        return [ipaddress.ip_network(p, strict=False) for p in parts]

    def clean(self) -> None:
        try:
            self.networks()
        except ValueError as exc:
            raise ValidationError({"cidrs": f"Not a network: {exc}"}) from exc


def _rule_field(rule: TierRule) -> models.Field:
    """The model field of one rule of :data:`tiers.rules.TIER_RULES`."""
    common: dict[str, Any] = {"verbose_name": rule.label, "help_text": rule.help}
    if rule.kind is Kind.ZONES:
        return models.ManyToManyField(NetworkZone, blank=True, **common)
    if rule.kind is Kind.FACTORS:
        return models.JSONField(default=dict, blank=True, **common)
    common["default"] = rule.default
    if rule.kind is Kind.FLAG:
        return models.BooleanField(**common)
    if rule.kind is Kind.TEXT:
        return models.CharField(max_length=rule.max_length, blank=True, **common)
    if rule.kind is Kind.CHOICE:
        return models.CharField(max_length=rule.max_length, choices=list(rule.choices), **common)
    if rule.nullable:
        common |= {"null": True, "blank": True}
    if rule.maximum <= MAX_SMALL:
        return models.PositiveSmallIntegerField(**common)
    return models.PositiveIntegerField(**common)


# The rules as an abstract model, one field per row of the table: the table is the model.
TierRules = type("TierRules", (models.Model,), {
    "__module__": __name__,
    "__doc__": "A tier's rules, one field per row of tiers.rules.TIER_RULES.",
    "Meta": type("Meta", (), {"abstract": True}),
    **{rule.name: _rule_field(rule) for rule in TIER_RULES},
})


class Tier(TierRules):
    """A sensitivity tier: how resources tagged with it are reached and re-checked."""

    name = models.CharField(max_length=32, unique=True, validators=[slug_validator])

    class Meta:
        ordering = ["rank", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if problems := combination_problems(self.rule_values(zones=False)):
            raise ValidationError(problems)

    def rule_values(self, *, zones: bool = True) -> dict[str, Any]:
        """The tier's rules as plain values, zones by name (``zones=False``: without the
        many-to-many, e.g. before the tier is saved)."""
        values = {rule.name: getattr(self, rule.name) for rule in TIER_RULES if rule.kind is not Kind.ZONES}
        if zones:
            values["allowed_zones"] = sorted(z.name for z in self.allowed_zones.all())
        return values


class Resource(models.Model):
    """Something employees reach through the portal: a web app, a desktop or a host."""

    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=4, choices=ResourceKind.choices)
    upstream = models.CharField(max_length=300, help_text="URL for web apps; host:port otherwise.")
    description = models.CharField(max_length=300, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="owned_resources")
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="resources")
    allowed_groups = models.ManyToManyField(Group, blank=True, related_name="resources")
    allowed_users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True,
                                           related_name="shared_resources")
    enabled = models.BooleanField(default=True)
    paths_case_sensitive = models.BooleanField(
        default=False,
        help_text="Match action rules on the path's exact case. Leave off unless the app itself "
                  "routes case-sensitively: off, /Admin is judged like /admin, so a change of case "
                  "can never pick a milder rule.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    @property
    def portal_path(self) -> str:
        return f"/apps/{self.slug}/" if self.kind == ResourceKind.WEB else f"/desktop/{self.slug}/"


class ActionRule(models.Model):
    """Maps requests to an action class, e.g. ``POST /admin/*`` is sensitive. First match wins."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="action_rules")
    order = models.PositiveSmallIntegerField(default=0)
    methods = models.CharField(max_length=64, default="*", help_text="Comma-separated, or * for any.")
    path = models.CharField(max_length=200, default="*", help_text="Glob on the app's path, e.g. /admin/*")
    action_class = models.CharField(max_length=10, choices=[(c.value, c.value) for c in ActionClass])

    class Meta:
        ordering = ["resource", "order", "id"]

    def __str__(self) -> str:
        return f"{self.methods} {self.path} -> {self.action_class}"


class TierChange(models.Model):
    """History of a resource's tier: who moved it, when, from what to what."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="tier_changes")
    from_tier = models.CharField(max_length=32, blank=True)
    to_tier = models.CharField(max_length=32)
    changed_by = models.CharField(max_length=150, help_text="Username, or 'catalog' for YAML applies.")
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.resource.slug}: {self.from_tier or '-'} -> {self.to_tier}"


class AccessRequest(models.Model):
    """A just-in-time request: who wants what, why, and for how long."""

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        CANCELLED = "cancelled"

    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                  related_name="access_requests")
    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="access_requests")
    justification = models.TextField(max_length=1000)
    duration_seconds = models.PositiveIntegerField(default=3600)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="decided_requests")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.requester} -> {self.resource.slug} ({self.state})"


class AccessGrant(models.Model):
    """A time-boxed grant that an approved request creates."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_grants")
    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="grants")
    request = models.OneToOneField(AccessRequest, null=True, blank=True, on_delete=models.SET_NULL)
    granted_by = models.CharField(max_length=150)
    starts_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-expires_at"]
        indexes = [models.Index(fields=["user", "resource", "expires_at"])]

    def __str__(self) -> str:
        return f"{self.user} -> {self.resource.slug} until {self.expires_at:%Y-%m-%d %H:%M}"


class ActionChallenge(models.Model):
    """A one-time MFA grant bound to one action (resource, method, path, the held request's
    digest) and one session.

    Created when a tier asks for a code for this very action; marked verified by the
    step-up page; consumed by the first matching request, so doing it again asks again.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    session_hash = models.CharField(max_length=64)
    resource = models.ForeignKey(Resource, on_delete=models.CASCADE)
    method = models.CharField(max_length=16)
    path = models.CharField(max_length=2000)
    digest = models.CharField(max_length=64, blank=True, default="",
                              help_text="SHA-256 of the held request this grant is for (empty: method "
                                        "and path alone).")
    created_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "resource", "method"])]

    def __str__(self) -> str:
        return f"{self.method} {self.path} on {self.resource_id}"


class PolicyChangeRequest(models.Model):
    """A change that lowers protection, held until a second admin approves it (four eyes).

    Nothing is written to the tier or resource while the request waits: the stronger rules
    stay in force. ``changes`` maps each held field to ``[from, to]``; ``weakens`` says in
    words what would get weaker. Approving applies it at once, so an approved request is
    normally seen as ``applied``.
    """

    class Kind(models.TextChoices):
        TIER = "tier", "Tier rules"
        RETAG = "retag", "Resource tier"

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        APPLIED = "applied"
        REJECTED = "rejected"
        WITHDRAWN = "withdrawn"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    tier = models.ForeignKey(Tier, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="change_requests",
                             help_text="The tier whose rules would change (kind tier).")
    resource = models.ForeignKey(Resource, null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="change_requests",
                                 help_text="The resource that would move (kind retag).")
    changes = models.JSONField(help_text="Each held field as [from, to].")
    weakens = models.JSONField(default=list, help_text="What would get weaker, in words.")
    reason = models.CharField(max_length=500, blank=True, help_text="Why the requester wants it.")
    source = models.CharField(max_length=300, blank=True,
                              help_text="Where it was asked: a Manage page, or FILE:LINE of a catalog.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                     on_delete=models.SET_NULL, related_name="policy_changes_requested",
                                     help_text="Empty for a catalog apply run without --requested-by.")
    requested_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="policy_changes_decided")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.CharField(max_length=300, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["state", "requested_at"])]

    def __str__(self) -> str:
        target = self.resource.slug if self.resource_id else (self.tier.name if self.tier_id else "?")
        return f"{self.kind} {target} ({self.state})"

    @property
    def target_name(self) -> str:
        """The tier's name or the resource's slug."""
        if self.kind == self.Kind.RETAG:
            return self.resource.slug if self.resource_id else ""
        return self.tier.name if self.tier_id else ""

    @property
    def requester_name(self) -> str:
        return self.requested_by.get_username() if self.requested_by_id else "catalog"
