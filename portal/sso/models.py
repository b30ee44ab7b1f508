"""Who an IdP says a person is (links), the pseudo device an IdP's MFA verifies, used logout tokens,
and IdPs entered in the admin (as well as those of PORTAL_OIDC_PROVIDERS)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django_otp.models import Device

from portal.sso.providers import IdentityProvider, ProviderConfigError, parse_provider

__all__ = ["IdpMfaDevice", "LogoutTokenUse", "OidcProvider", "SsoLink"]

ADMIN_SOURCE = "admin IdP"


def _names(text: str) -> list[str]:
    return text.split()


class OidcProvider(models.Model):
    """An OpenID Provider entered in the admin. The environment's IdP of the same name wins
    (:func:`portal.sso.providers.merge_providers`); the client secret is kept sealed
    (:mod:`portal.sso.sealing`) and never shown back."""

    name = models.CharField(max_length=40, unique=True,
                            validators=[RegexValidator(r"^[a-z0-9][a-z0-9-]{0,39}$",
                                                       "Lower-case letters, digits and '-'.")],
                            help_text="In the URLs registered at the IdP: /sso/<name>/callback/ and "
                                      "/sso/<name>/backchannel-logout/.")
    label = models.CharField(max_length=80, blank=True,
                             help_text="On the sign-in button (default: the name).")
    issuer = models.CharField(max_length=255, help_text="https:// issuer URL (http:// only on localhost).")
    client_id = models.CharField(max_length=255)
    client_secret_sealed = models.TextField(editable=False, help_text="Encrypted; never shown.")
    scopes = models.CharField(max_length=255, default="openid email profile groups",
                              help_text="Space-separated; must include openid.")
    groups_claim = models.CharField(max_length=80, default="groups")
    groups = models.JSONField(default=dict, blank=True,
                              help_text='IdP group -> portal groups, e.g. {"eng": ["employee", "eng"]}.')
    default_groups = models.CharField(max_length=255, default="employee", blank=True,
                                      help_text="Space-separated portal groups everyone from this IdP gets.")
    mfa_amr = models.CharField(max_length=255, default="mfa otp hwk",
                               help_text="Space-separated amr values that count as MFA at the IdP.")
    mfa_acr = models.CharField(max_length=255, blank=True, help_text="Space-separated acr values that count "
                                                                     "as MFA at the IdP.")
    link_by_email = models.BooleanField(default=False, help_text="Match an existing (non-staff) account by "
                                                                 "a verified e-mail on first sign-in.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "OpenID provider"

    def __str__(self) -> str:
        return self.label or self.name

    def _raw(self, client_secret: str) -> dict[str, Any]:
        return {"name": self.name, "label": self.label or self.name, "issuer": self.issuer,
                "client_id": self.client_id, "client_secret": client_secret,
                "scopes": _names(self.scopes), "groups_claim": self.groups_claim, "groups": self.groups,
                "default_groups": _names(self.default_groups), "mfa_amr": _names(self.mfa_amr),
                "mfa_acr": _names(self.mfa_acr), "link_by_email": self.link_by_email}

    def clean(self) -> None:
        """The rules an IdP of the environment must meet (the secret is checked by the form)."""
        try:
            parse_provider(self._raw("unchecked"), ADMIN_SOURCE)
        except ProviderConfigError as exc:
            raise ValidationError(str(exc)) from exc

    def as_provider(self) -> IdentityProvider:
        """The IdP as sign-in uses it, its secret opened."""
        from portal.sso.sealing import open_sealed

        return parse_provider(self._raw(open_sealed(self.client_secret_sealed)), ADMIN_SOURCE)


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


class IdpActionProof(models.Model):
    """A step-up at the IdP that confirmed exactly one held action (a one-time step-up).

    Its presence tells the decision that the confirmation waiting for this action was the
    IdP's MFA (``tiers.context``), so a tier that does not count ``idp`` refuses it;
    ``action_digest`` is the held action the request was started for (server-side state).
    """

    challenge = models.OneToOneField("tiers.ActionChallenge", on_delete=models.CASCADE,
                                     related_name="idp_proof")
    link = models.ForeignKey(SsoLink, null=True, on_delete=models.SET_NULL,
                             help_text="The IdP account that confirmed (kept empty once it is revoked).")
    action_digest = models.CharField(max_length=64, help_text="SHA-256 of the bound action.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"IdP proof for challenge {self.challenge_id}"
