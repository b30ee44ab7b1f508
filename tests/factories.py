"""Typed factory_boy factories and helpers for users with roles and authenticators."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.accounts.roles import ensure_roles

PASSWORD = "correct-horse-battery-staple-42"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def role(self: AbstractUser, create: bool, extracted: str | None, **kwargs: object) -> None:
        if create:
            groups = ensure_roles()
            self.groups.add(groups[extracted or "employee"])
            if extracted == "admin":
                self.is_staff = True
            self.save()


def enrol_totp(user: AbstractUser) -> TOTPDevice:
    """Give ``user`` a confirmed TOTP device (as if enrolment had happened)."""
    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)


def totp_code(device: TOTPDevice, offset_steps: int = 0) -> str:
    """The code ``device`` accepts now (or ``offset_steps`` time steps away)."""
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = totp.time + offset_steps * device.step
    return f"{totp.token():0{device.digits}d}"
