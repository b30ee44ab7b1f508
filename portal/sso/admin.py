"""SSO links in Django admin: read-only (they are made by sign-ins); deleting one unlinks."""

from django.contrib import admin

from portal.sso.models import SsoLink


@admin.register(SsoLink)
class SsoLinkAdmin(admin.ModelAdmin):
    list_display = ("user", "provider", "subject", "email", "created", "last_sign_in")
    list_filter = ("provider",)
    search_fields = ("user__username", "subject", "email")
    readonly_fields = ("user", "provider", "issuer", "subject", "email", "created", "last_sign_in")

    def has_add_permission(self, request: object) -> bool:
        return False
