"""WebAuthn ceremonies with py_webauthn: enrol a passkey, sign in with one, confirm with one.

Every ceremony starts with a server nonce kept in the session (one ceremony at a time, used
once, five minutes at most). The challenge the authenticator signs is not the nonce itself
but a hash over the ceremony's purpose, the nonce and a *binding*: for a one-time step-up
the binding is the digest of the held action (:mod:`portal.passkeys.binding`), so a
signature made to confirm one action cannot confirm any other, nor sign anybody in.

User verification is required in every ceremony; the signature counter is checked after the
signature: a counter that does not move forward means a cloned authenticator, refused and
written to the audit chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import django_otp
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import parse_authentication_credential_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from portal.accounts.mfa import AMR_KEY, MFA_TIME_KEY
from portal.audit.chain import record
from portal.passkeys.models import PasskeyDevice

__all__ = [
    "CEREMONY_SECONDS", "PASSKEY_AMR", "PasskeyError", "Purpose", "RelyingParty", "authentication_options",
    "b64url", "finish_authentication", "finish_registration", "has_passkey", "mark_passkey",
    "registration_options", "relying_party",
]

SESSION_KEY = "passkeys.ceremony"
CEREMONY_SECONDS = 300
MAX_CREDENTIAL_CHARS = 64 * 1024
# RFC 8176: a hardware-bound key, and the user verified on it (PIN or biometrics). Signed in
# with a password as well, the amr starts with "pwd": ["pwd", "hwk", "user"].
PASSKEY_AMR = ("hwk", "user")
_TRANSPORTS = {t.value for t in AuthenticatorTransport}


class Purpose(StrEnum):
    """Why a ceremony was started; part of the signed challenge, so one never serves another."""

    REGISTER = "register"
    SIGN_IN = "sign-in"  # passwordless, with a discoverable passkey
    SECOND_FACTOR = "second-factor"  # after the password
    STEP_UP = "step-up"


class PasskeyError(Exception):
    """A ceremony that failed: ``code`` for the audit trail, ``message`` for the person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RelyingParty:
    """Who the passkeys belong to: the portal's host (RP ID) and its origin."""

    id: str
    origin: str
    name: str = "ZT Portal"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def relying_party(request: HttpRequest) -> RelyingParty:
    """The RP ID and origin: ``PORTAL_URL`` when set, else the host the browser reached
    (already checked against ``ALLOWED_HOSTS``)."""
    origin = (settings.PORTAL_URL or f"{request.scheme}://{request.get_host()}").rstrip("/")
    rp_id = settings.PORTAL_PASSKEY_RP_ID or urlsplit(origin).hostname or ""
    return RelyingParty(rp_id, origin)


def has_passkey(user: AbstractBaseUser) -> bool:
    """True when the user holds at least one passkey."""
    return PasskeyDevice.objects.filter(user=user, confirmed=True).exists()


def _challenge(purpose: Purpose, nonce: bytes, binding: str) -> bytes:
    return hashlib.sha256(b"zt-portal passkey\x00" + purpose.encode() + b"\x00" + nonce + b"\x00"
                          + binding.encode()).digest()


def _begin(session: Any, purpose: Purpose, binding: str = "", **extra: str) -> bytes:
    nonce = os.urandom(32)
    session[SESSION_KEY] = {"purpose": str(purpose), "nonce": b64url(nonce), "binding": binding,
                            "expires": time.time() + CEREMONY_SECONDS, **extra}
    return _challenge(purpose, nonce, binding)


def _take(session: Any, purpose: Purpose, binding: str) -> tuple[bytes, dict[str, Any]]:
    """The challenge the authenticator must have signed, for ``binding`` as it is now.

    The ceremony is removed first (used once, whatever happens next).
    """
    pending = session.pop(SESSION_KEY, None)
    if not isinstance(pending, dict) or pending.get("purpose") != purpose \
            or float(pending.get("expires", 0)) < time.time():
        raise PasskeyError("no_ceremony", "This passkey request has expired. Try again.")
    if pending.get("binding", "") != binding:
        raise PasskeyError("action_mismatch", "This passkey confirmation was made for another "
                           "action, so it cannot confirm this one. Start the action again.")
    return _challenge(purpose, _unb64url(pending["nonce"]), binding), pending


def _descriptors(devices: list[PasskeyDevice]) -> list[PublicKeyCredentialDescriptor]:
    return [PublicKeyCredentialDescriptor(
        id=_unb64url(d.credential_id),
        transports=[AuthenticatorTransport(t) for t in d.transports if t in _TRANSPORTS] or None)
        for d in devices]


def _user_handle(user: AbstractBaseUser) -> str:
    existing = PasskeyDevice.objects.filter(user=user).values_list("user_handle", flat=True).first()
    return existing or b64url(os.urandom(32))


# --- enrolment ---------------------------------------------------------------------------------

def registration_options(request: HttpRequest, user: AbstractBaseUser) -> str:
    """The options (JSON) for ``navigator.credentials.create``: a discoverable passkey, user
    verification required, none of the user's passkeys registered twice."""
    rp = relying_party(request)
    handle = _user_handle(user)
    challenge = _begin(request.session, Purpose.REGISTER, handle=handle)
    options = generate_registration_options(
        rp_id=rp.id, rp_name=rp.name, user_name=user.get_username(), user_id=_unb64url(handle),
        user_display_name=user.get_full_name() or user.get_username(), challenge=challenge,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=_descriptors(list(PasskeyDevice.objects.filter(user=user))))
    return options_to_json(options)


def _credential(raw: object) -> str:
    text = raw if isinstance(raw, str) else json.dumps(raw)
    if not raw or len(text) > MAX_CREDENTIAL_CHARS:
        raise PasskeyError("malformed", "The browser's answer was not a passkey. Try again.")
    return text


def finish_registration(request: HttpRequest, user: AbstractBaseUser, credential: object,
                        name: str) -> PasskeyDevice:
    """Check the new credential against the ceremony and keep it as a named device."""
    expected, pending = _take(request.session, Purpose.REGISTER, "")
    rp = relying_party(request)
    text = _credential(credential)
    try:
        verified = verify_registration_response(
            credential=text, expected_challenge=expected, expected_rp_id=rp.id,
            expected_origin=rp.origin, require_user_verification=True)
        transports = [t for t in (json.loads(text).get("response") or {}).get("transports") or []
                      if t in _TRANSPORTS]
    except (WebAuthnException, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PasskeyError("invalid", "The passkey could not be checked, so it was not added. "
                           "Try again.") from exc
    credential_id = b64url(verified.credential_id)
    if PasskeyDevice.objects.filter(credential_id=credential_id).exists():
        raise PasskeyError("duplicate", "This passkey is already registered.")
    return PasskeyDevice.objects.create(
        user=user, name=(name.strip() or "Passkey")[:64], confirmed=True, credential_id=credential_id,
        public_key=verified.credential_public_key, sign_count=verified.sign_count,
        user_handle=pending["handle"], aaguid=str(verified.aaguid or ""), transports=transports,
        backed_up=verified.credential_backed_up)


# --- authentication ------------------------------------------------------------------------------

def authentication_options(request: HttpRequest, purpose: Purpose, user: AbstractBaseUser | None = None,
                           binding: str = "") -> str:
    """The options (JSON) for ``navigator.credentials.get``: the user's passkeys, or any
    discoverable one when signing in without a username."""
    rp = relying_party(request)
    challenge = _begin(request.session, purpose, binding)
    devices = list(PasskeyDevice.objects.filter(user=user, confirmed=True)) if user is not None else []
    options = generate_authentication_options(
        rp_id=rp.id, challenge=challenge, allow_credentials=_descriptors(devices),
        user_verification=UserVerificationRequirement.REQUIRED)
    return options_to_json(options)


def finish_authentication(request: HttpRequest, purpose: Purpose, credential: object,
                          user: AbstractBaseUser | None = None, binding: str = "") -> PasskeyDevice:
    """The device whose signature over this ceremony's challenge checks out, user verified and
    its counter moving forward; else :class:`PasskeyError`. ``user`` None: any user's
    discoverable passkey (then the returned user handle must match it)."""
    text = _credential(credential)
    try:
        parsed = parse_authentication_credential_json(text)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise PasskeyError("malformed", "The browser's answer was not a passkey. Try again.") from exc
    expected, _ = _take(request.session, purpose, binding)
    devices = PasskeyDevice.objects.filter(credential_id=b64url(parsed.raw_id), confirmed=True)
    if user is not None:
        devices = devices.filter(user=user)
    device = devices.select_related("user").first()
    if device is None:
        raise PasskeyError("unknown_credential", "This passkey is not registered for this account. "
                           "Use another passkey, or your authenticator app.")
    if user is None and (parsed.response.user_handle is None
                         or b64url(parsed.response.user_handle) != device.user_handle):
        raise PasskeyError("unknown_credential", "This passkey is not registered here.")
    rp = relying_party(request)
    try:
        # The counter is compared below, after the signature, so a clone can be told apart.
        verified = verify_authentication_response(
            credential=parsed, expected_challenge=expected, expected_rp_id=rp.id,
            expected_origin=rp.origin, credential_public_key=bytes(device.public_key),
            credential_current_sign_count=0, require_user_verification=True)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise PasskeyError("invalid", "The passkey's answer did not check out. Try again.") from exc
    with transaction.atomic():
        locked = PasskeyDevice.objects.select_for_update().get(pk=device.pk)
        stored, presented = locked.sign_count, verified.new_sign_count
        cloned = (stored > 0 or presented > 0) and presented <= stored
        if not cloned:
            locked.sign_count = presented
            locked.backed_up = verified.credential_backed_up
            locked.last_used_at = timezone.now()
            locked.save(update_fields=["sign_count", "backed_up", "last_used_at"])
    if cloned:
        record("passkey.clone_suspected", outcome="refused", actor=device.user.get_username(),
               client_address=getattr(request, "client_address", ""),
               request_id=getattr(request, "request_id", ""),
               reasons=[{"rule": "sign_count_not_increasing",
                         "message": "The passkey's signature counter did not move forward: "
                                    "it may have been copied."}],
               detail={"device": locked.name, "device_id": locked.pk, "stored_count": stored,
                       "presented_count": presented})
        raise PasskeyError("cloned", "This passkey was refused: its counter went backwards, which "
                           "happens when an authenticator was copied. Use another passkey and tell "
                           "your IT security team.")
    return locked


def mark_passkey(request: HttpRequest, device: PasskeyDevice, *, with_password: bool) -> None:
    """Record a passkey as this session's second factor, as ``mfa.mark_mfa`` does for codes:
    new session key, verified device, ``mfa_time``, and the amr ``[pwd,] hwk, user``."""
    request.session.cycle_key()
    django_otp.login(request, device)
    request.session[MFA_TIME_KEY] = int(time.time())
    request.session[AMR_KEY] = (["pwd"] if with_password else []) + list(PASSKEY_AMR)
