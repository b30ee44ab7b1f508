"""SSO in Django admin: links are read-only (sign-ins make them; deleting one unlinks); IdPs
may be entered here as well as in PORTAL_OIDC_PROVIDERS (the environment wins on a name clash).
An IdP's client secret is write-only: sealed on save, never rendered back."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin

from portal.sso.models import OidcProvider, SsoLink
from portal.sso.sealing import seal


@admin.register(SsoLink)
class SsoLinkAdmin(admin.ModelAdmin):
    list_display = ("user", "provider", "subject", "email", "created", "last_sign_in")
    list_filter = ("provider",)
    search_fields = ("user__username", "subject", "email")
    readonly_fields = ("user", "provider", "issuer", "subject", "email", "created", "last_sign_in")

    def has_add_permission(self, request: object) -> bool:
        return False


class OidcProviderForm(forms.ModelForm):
    """The secret is typed in, never shown: empty on a change keeps the stored one."""

    client_secret = forms.CharField(
        required=False, strip=True, widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted and never shown again. Leave empty to keep the stored secret.")

    class Meta:
        model = OidcProvider
        fields = ("name", "label", "enabled", "issuer", "client_id", "client_secret", "scopes",
                  "groups_claim", "groups", "default_groups", "mfa_amr", "mfa_acr", "link_by_email")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not data.get("client_secret") and not self.instance.client_secret_sealed:
            self.add_error("client_secret", "The IdP's client secret is required.")
        return data

    def save(self, commit: bool = True) -> OidcProvider:
        if secret := self.cleaned_data.get("client_secret"):
            self.instance.client_secret_sealed = seal(secret)
        return super().save(commit)


@admin.register(OidcProvider)
class OidcProviderAdmin(admin.ModelAdmin):
    form = OidcProviderForm
    list_display = ("name", "label", "issuer", "enabled", "overridden_by_environment")
    list_filter = ("enabled",)
    search_fields = ("name", "label", "issuer")

    @admin.display(boolean=True, description="Overridden by PORTAL_OIDC_PROVIDERS")
    def overridden_by_environment(self, obj: OidcProvider) -> bool:
        """An IdP of the same name in the environment is the one used."""
        return any(p.name == obj.name for p in settings.PORTAL_OIDC_PROVIDERS)
