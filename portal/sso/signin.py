"""Signing in through an IdP, as plain functions: who the person is, their groups, their MFA.

Matching: the IdP's ``sub`` recorded in :class:`SsoLink` (never the e-mail, never the username).
An existing local account is matched by e-mail only on first sign-in, only when the IdP marks
the e-mail verified, only when the admin allowed it for that IdP (``link_by_email``), only for
exactly one active account, and never for staff or superusers: a break-glass admin cannot be
taken over by whoever controls an IdP account with the same address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.accounts.roles import ROLE_PERMISSIONS, ensure_roles
from portal.sso.models import IdpMfaDevice, SsoLink
from portal.sso.providers import IdentityProvider

__all__ = ["SignInResult", "apply_groups", "idp_amr", "idp_did_mfa", "mapped_groups", "mfa_device",
           "sign_in_person"]

_USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")


@dataclass(frozen=True)
class SignInResult:
    """The portal account the IdP's answer stands for, or why there is none."""

    user: AbstractBaseUser | None
    link: SsoLink | None
    created: bool = False
    refused: str = ""  # short code for the audit trail and the page


def idp_amr(claims: dict[str, Any]) -> list[str]:
    """The IdP's ``amr`` as a list of strings (anything else is ignored, never trusted)."""
    amr = claims.get("amr")
    return [str(a) for a in amr if isinstance(a, str)][:10] if isinstance(amr, list) else []


def idp_did_mfa(provider: IdentityProvider, claims: dict[str, Any]) -> bool:
    """True when the IdP says a second factor was checked: an ``amr`` or ``acr`` it is trusted for."""
    if set(idp_amr(claims)) & set(provider.mfa_amr):
        return True
    return bool(provider.mfa_acr) and claims.get("acr") in provider.mfa_acr


def mapped_groups(provider: IdentityProvider, claims: dict[str, Any]) -> set[str]:
    """The portal groups the IdP's groups map to (plus the IdP's default groups)."""
    sent = claims.get(provider.groups_claim) or []
    if isinstance(sent, str):
        sent = [sent]
    groups = set(provider.default_groups)
    for name in sent if isinstance(sent, list) else ():
        groups.update(provider.groups.get(str(name), ()))
    return groups


def apply_groups(user: AbstractBaseUser, provider: IdentityProvider, groups: set[str]) -> None:
    """Make the user's membership of the groups this IdP manages exactly ``groups``."""
    if set(ROLE_PERMISSIONS) & provider.managed_groups:
        ensure_roles()
    wanted = [Group.objects.get_or_create(name=name)[0] for name in sorted(groups)]
    stale = user.groups.filter(name__in=provider.managed_groups - groups)
    if stale.exists():
        user.groups.remove(*stale)
    missing = [g for g in wanted if not user.groups.filter(pk=g.pk).exists()]
    if missing:
        user.groups.add(*missing)


def _free_username(claims: dict[str, Any]) -> str:
    model = get_user_model()
    email = claims.get("email") if isinstance(claims.get("email"), str) else ""
    wanted = claims.get("preferred_username") or email.partition("@")[0] or "sso-user"
    base = _USERNAME_UNSAFE.sub("-", str(wanted))[:120].strip("-") or "sso-user"
    name, n = base, 1
    while model._default_manager.filter(username__iexact=name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _verified_email(claims: dict[str, Any]) -> str:
    email = claims.get("email")
    verified = claims.get("email_verified") in (True, "true")
    return email if verified and isinstance(email, str) and "@" in email else ""


def _match_by_email(provider: IdentityProvider, claims: dict[str, Any]) -> AbstractBaseUser | None:
    email = _verified_email(claims)
    if not (provider.link_by_email and email):
        return None
    candidates = list(get_user_model()._default_manager.filter(
        email__iexact=email, is_active=True, is_staff=False, is_superuser=False)[:2])
    if len(candidates) != 1:
        return None
    if SsoLink.objects.filter(user=candidates[0], issuer=provider.issuer).exists():
        return None  # already someone else at this IdP
    return candidates[0]


def sign_in_person(provider: IdentityProvider, claims: dict[str, Any]) -> SignInResult:
    """Find or create the account for the verified ID token ``claims``; groups brought in line."""
    subject = str(claims["sub"])
    email = claims.get("email") if isinstance(claims.get("email"), str) else ""
    with transaction.atomic():
        link = SsoLink.objects.select_related("user").filter(issuer=provider.issuer, subject=subject).first()
        created = False
        if link is None:
            user = _match_by_email(provider, claims)
            if user is None:
                model = get_user_model()
                user = model(username=_free_username(claims), email=_verified_email(claims))
                user.set_unusable_password()  # signs in through the IdP only
                user.save()
                created = True
            try:
                with transaction.atomic():
                    link = SsoLink.objects.create(user=user, provider=provider.name, issuer=provider.issuer,
                                                  subject=subject, email=email)
            except IntegrityError:  # the same person's first sign-in twice at once
                if created:
                    user.delete()
                link = SsoLink.objects.select_related("user").get(issuer=provider.issuer, subject=subject)
                created = False
        user = link.user
        if not user.is_active:
            return SignInResult(user, link, refused="account_locked")
        SsoLink.objects.filter(pk=link.pk).update(last_sign_in=timezone.now(), email=email)
        apply_groups(user, provider, mapped_groups(provider, claims))
    return SignInResult(user, link, created=created)


def mfa_device(link: SsoLink) -> IdpMfaDevice:
    """The pseudo device that stands for this link's IdP-side MFA in django-otp's session."""
    device, _ = IdpMfaDevice.objects.get_or_create(
        link=link, defaults={"user": link.user, "name": f"MFA at {link.provider}", "confirmed": True})
    return device
