"""Second factors on top of django-otp: TOTP enrolment, verification, backup codes, freshness.

The session remembers when MFA last succeeded (``mfa_time``, epoch seconds) so every
enforcement point can ask how fresh it is; step-up builds on exactly that value.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass

import django_otp
import qrcode
import qrcode.image.svg
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

__all__ = [
    "MFA_TIME_KEY",
    "VerifyResult",
    "confirm_enrolment",
    "has_confirmed_totp",
    "issue_backup_codes",
    "mark_mfa",
    "mfa_age",
    "pending_totp_device",
    "provisioning_qr_svg",
    "totp_secret_base32",
    "verify_second_factor",
]

MFA_TIME_KEY = "mfa_time"
# RFC 8176 method references of this session's sign-in, e.g. ["pwd", "otp"]; the assertion's
# ``amr`` claim is read from here. Each way of signing in (TOTP, passkey, SSO) writes its own.
AMR_KEY = "amr"
DEFAULT_AMR = ("pwd", "otp")
TOTP_NAME = "Authenticator app"
BACKUP_NAME = "Backup codes"


def has_confirmed_totp(user: AbstractBaseUser) -> bool:
    """True once the user has finished TOTP enrolment."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def pending_totp_device(user: AbstractBaseUser) -> TOTPDevice:
    """The unconfirmed TOTP device being enrolled (one, kept across page reloads)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("id").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=TOTP_NAME, confirmed=False)
    return device


def totp_secret_base32(device: TOTPDevice) -> str:
    """The shared secret as authenticator apps want it typed in."""
    return base64.b32encode(device.bin_key).decode().rstrip("=")


def provisioning_qr_svg(device: TOTPDevice) -> str:
    """An inline SVG QR code of the ``otpauth://`` URI (no JavaScript, no external request)."""
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue().decode()


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a code check: the device that accepted it, or why none did."""

    device: TOTPDevice | StaticDevice | None
    throttled_for: int = 0

    @property
    def ok(self) -> bool:
        return self.device is not None


def _throttle_wait(device: TOTPDevice | StaticDevice) -> int:
    allowed, info = device.verify_is_allowed()
    if allowed:
        return 0
    until = (info or {}).get("locked_until")
    if until is None:
        return 1
    from django.utils import timezone

    return max(1, int((until - timezone.now()).total_seconds() + 0.999))


def confirm_enrolment(user: AbstractBaseUser, token: str) -> VerifyResult:
    """Check a code against the pending TOTP device and confirm it when right."""
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).first()
        if device is None:
            return VerifyResult(None)
        if wait := _throttle_wait(device):
            return VerifyResult(None, throttled_for=wait)
        if not device.verify_token(token):
            return VerifyResult(None, throttled_for=0)
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
    return VerifyResult(device)


def verify_second_factor(user: AbstractBaseUser, token: str) -> VerifyResult:
    """Check a TOTP code or a backup code. Row locks stop two checks racing on one code."""
    token = (token or "").strip().replace(" ", "")
    # Codes are ASCII letters and digits; anything else (a NUL above all, which PostgreSQL
    # refuses in a query) is simply wrong, whichever view passed it on.
    if not token or not (token.isascii() and token.isalnum()):
        return VerifyResult(None)
    with transaction.atomic():
        totp = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True)
        static = StaticDevice.objects.select_for_update().filter(user=user, confirmed=True)
        devices: list[TOTPDevice | StaticDevice] = [*totp, *static]
        waits = [_throttle_wait(d) for d in devices]
        if devices and all(waits):
            return VerifyResult(None, throttled_for=min(waits))
        for device, wait in zip(devices, waits, strict=True):
            if wait:
                continue
            # A six-digit code is only ever a TOTP; backup codes are longer, so one guess
            # never costs both devices a throttle step.
            if isinstance(device, TOTPDevice) != (token.isdigit() and len(token) == device.digits):
                continue
            if device.verify_token(token):
                return VerifyResult(device)
    return VerifyResult(None)


def issue_backup_codes(user: AbstractBaseUser) -> list[str]:
    """Replace the user's backup codes with fresh ones and return them (shown once)."""
    with transaction.atomic():
        device, _ = StaticDevice.objects.get_or_create(
            user=user, name=BACKUP_NAME, defaults={"confirmed": True}
        )
        device.token_set.all().delete()
        codes = [StaticToken.random_token() for _ in range(settings.PORTAL_BACKUP_CODE_COUNT)]
        StaticToken.objects.bulk_create(StaticToken(device=device, token=c) for c in codes)
    return codes


def remaining_backup_codes(user: AbstractBaseUser) -> int:
    """How many unused backup codes the user has left."""
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def mark_mfa(request: HttpRequest, device: TOTPDevice | StaticDevice) -> None:
    """Record a successful second factor: new session key, verified device, ``mfa_time``."""
    request.session.cycle_key()
    django_otp.login(request, device)
    request.session[MFA_TIME_KEY] = int(time.time())
    # A federated sign-in keeps what the IdP said ("fed" and the IdP's values) and gains "otp"
    # in front: what precedes "fed" is the portal's own factor (tiers.context.factor_of_amr).
    earlier = list(request.session.get(AMR_KEY) or [])
    request.session[AMR_KEY] = (["otp", *earlier[earlier.index("fed"):]] if "fed" in earlier
                                else list(DEFAULT_AMR))


def mfa_age(request: HttpRequest) -> float | None:
    """Seconds since the last successful MFA in this session (None if never)."""
    at = request.session.get(MFA_TIME_KEY)
    if at is None:
        return None
    return max(0.0, time.time() - float(at))
