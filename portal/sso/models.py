"""Who an IdP says a person is (links), the pseudo device an IdP's MFA verifies, used logout tokens."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django_otp.models import Device

__all__ = ["IdpMfaDevice", "LogoutTokenUse", "SsoLink"]


class SsoLink(models.Model):
    """A portal user is this ``subject`` at that ``issuer``: matched on every later sign-in."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_links",
                             help_text="The portal account the IdP's subject signs in as.")
    provider = models.CharField(max_length=40, help_text="Name of the IdP in PORTAL_OIDC_PROVIDERS.")
    issuer = models.CharField(max_length=255, help_text="The IdP's issuer URL (the id_token's iss).")
    subject = models.CharField(max_length=255, help_text="The IdP's stable id for the person (sub).")
    email = models.EmailField(blank=True, help_text="E-mail the IdP last sent (verified or not).")
    created = models.DateTimeField(auto_now_add=True, help_text="First sign-in through this IdP.")
    last_sign_in = models.DateTimeField(null=True, blank=True, help_text="Latest sign-in through this IdP.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="sso_link_unique_subject")]

    def __str__(self) -> str:
        return f"{self.provider}:{self.subject} -> {self.user_id}"


class IdpMfaDevice(Device):
    """Stands for "the IdP checked a second factor" in django-otp's session (it verifies no token).

    django-otp marks a session verified by naming a device; an SSO sign-in with IdP MFA names
    this one, so every enforcement point that asks ``user.is_verified()`` works unchanged.
    """

    link = models.OneToOneField(SsoLink, on_delete=models.CASCADE, related_name="mfa_device",
                                help_text="The link whose IdP-side MFA this device stands for.")

    def verify_token(self, token: object) -> bool:
        return False  # never accepts a code: only an IdP sign-in verifies with it


class LogoutTokenUse(models.Model):
    """A back-channel logout token's ``jti`` seen once: a replay of it is refused."""

    issuer = models.CharField(max_length=255, help_text="Issuer of the logout token.")
    jti = models.CharField(max_length=255, help_text="The token's unique id.")
    expires = models.DateTimeField(help_text="After this the row may go: the token is too old anyway.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "jti"], name="sso_logout_jti_once")]

    def __str__(self) -> str:
        return f"{self.issuer} {self.jti}"
