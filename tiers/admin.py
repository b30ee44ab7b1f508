"""The catalog in Django's admin, for staff.

The admin is not a way around four eyes (docs/decisions/0018): a tier's protective rules and
a resource's tier are read-only here once they exist, so lowering protection goes through the
Manage pages or ``catalog apply``, where a second admin approves it. A new resource's first
tier lands in its history and the audit chain; grants are revoked through :mod:`tiers.jit`,
never edited; the history of tier changes, access requests and policy changes is read-only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from tiers import jit
from tiers.forms import AcceptedFactorsField
from tiers.models import (
    AccessGrant,
    AccessRequest,
    ActionRule,
    NetworkZone,
    PolicyChangeRequest,
    Resource,
    Tier,
    TierChange,
)
from tiers.pages import note_tier_change
from tiers.policy_changes import RULE_KEYS
from tiers.rules import rule_groups

__all__ = [
    "AccessGrantAdmin", "AccessRequestAdmin", "NetworkZoneAdmin", "PolicyChangeRequestAdmin",
    "ResourceAdmin", "TierAdmin", "TierChangeAdmin",
]

FOUR_EYES_NOTE = ("Protective fields are read-only here: change them on the portal's Manage pages, "
                  "where a change that lowers protection waits for a second admin's approval.")


class ReadOnlyAdmin(admin.ModelAdmin):
    """History: staff may look, nobody may add, change or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(NetworkZone)
class NetworkZoneAdmin(admin.ModelAdmin):
    list_display = ("name", "trusted", "cidrs")
    list_filter = ("trusted",)
    search_fields = ("name", "cidrs")


def _tier_fieldsets() -> tuple[tuple[str | None, dict[str, Any]], ...]:
    """The admin's sections, from the rules' groups (tiers.rules.TIER_RULES)."""
    return tuple((group or None, {"fields": (("name", *names) if not group else tuple(names))})
                 for group, names in rule_groups())


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    list_display = ("name", "rank", "access_mode", "mfa_read", "mfa_write", "mfa_sensitive",
                    "approval_required", "device_trust_required", "recording")
    list_filter = ("access_mode", "approval_required", "recording")
    search_fields = ("name", "description")
    filter_horizontal = ("allowed_zones",)
    fieldsets = _tier_fieldsets()

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        """``accepted_factors`` as ticks, like on the Manage page, not as raw JSON."""
        if db_field.name == "accepted_factors":
            return AcceptedFactorsField(label=db_field.verbose_name, help_text=db_field.help_text,
                                        required=False)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Tier | None = None) -> tuple[str, ...]:
        """An existing tier's rules change only through the four-eyes path (Manage, catalog)."""
        return RULE_KEYS if obj is not None else ()

    def get_fieldsets(self, request: HttpRequest, obj: Tier | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        name, options = fieldsets[0]
        return ((name, {**options, "description": FOUR_EYES_NOTE}), *fieldsets[1:])


class ActionRuleInline(admin.TabularInline):
    model = ActionRule
    extra = 0
    fields = ("order", "methods", "path", "action_class")


@admin.register(Resource)
class ResourceAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "kind", "tier", "enabled", "owner")
    list_filter = ("tier", "kind", "enabled")
    search_fields = ("name", "slug", "description", "upstream")
    list_select_related = ("tier", "owner")
    autocomplete_fields = ("owner",)
    filter_horizontal = ("allowed_groups", "allowed_users")
    inlines = [ActionRuleInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Resource | None = None) -> tuple[str, ...]:
        """A resource's tier is chosen when it is created; moving it is a Manage-page re-tag."""
        return ("tier",) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: Resource, form: ModelForm, change: bool) -> None:
        previous = Resource.objects.select_related("tier").filter(pk=obj.pk).first() if change else None
        super().save_model(request, obj, form, change)
        from_tier = previous.tier.name if previous else ""
        if from_tier != obj.tier.name:
            note_tier_change(obj, from_tier, obj.tier.name, request.user.get_username(),
                             jit.Origin.of(request))


@admin.register(AccessRequest)
class AccessRequestAdmin(ReadOnlyAdmin):
    """Requests are decided on the portal's approval page (so self-approval stays impossible)."""

    list_display = ("requester", "resource", "state", "duration_seconds", "created_at", "decided_by",
                    "decided_at")
    list_filter = ("state", "resource__tier")
    search_fields = ("requester__username", "resource__slug", "justification")
    list_select_related = ("requester", "resource", "decided_by")


@admin.register(AccessGrant)
class AccessGrantAdmin(ReadOnlyAdmin):
    """Grants are made by approvals; here they can only be revoked (audited)."""

    list_display = ("user", "resource", "granted_by", "starts_at", "expires_at", "revoked_at")
    list_filter = ("resource__tier",)
    search_fields = ("user__username", "resource__slug", "granted_by")
    list_select_related = ("user", "resource")
    actions = ["revoke_grants"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Actions need change permission; the fields themselves stay read-only (no form saves).
        return obj is None and request.user.has_perm(jit.APPROVE_PERMISSION)

    @admin.action(description="Revoke the selected grants now")
    def revoke_grants(self, request: HttpRequest, queryset: QuerySet[AccessGrant]) -> None:
        revoked, skipped = 0, []
        for grant in queryset.select_related("resource"):
            try:
                jit.revoke(grant, request.user, origin=jit.Origin.of(request))
                revoked += 1
            except jit.JitError as exc:
                skipped.append(f"#{grant.pk}: {exc}")
        self.message_user(request, f"Revoked {revoked} grant(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, "Not revoked: " + "; ".join(skipped), messages.WARNING)


@admin.register(TierChange)
class TierChangeAdmin(ReadOnlyAdmin):
    list_display = ("resource", "from_tier", "to_tier", "changed_by", "changed_at")
    list_filter = ("to_tier", "changed_by")
    search_fields = ("resource__slug", "changed_by")
    list_select_related = ("resource",)


@admin.register(PolicyChangeRequest)
class PolicyChangeRequestAdmin(ReadOnlyAdmin):
    """Changes are approved on the portal's Policy changes page (so self-approval stays impossible)."""

    list_display = ("kind", "tier", "resource", "state", "requested_by", "requested_at", "decided_by",
                    "decided_at")
    list_filter = ("state", "kind")
    search_fields = ("resource__slug", "tier__name", "requested_by__username", "reason")
    list_select_related = ("tier", "resource", "requested_by", "decided_by")
