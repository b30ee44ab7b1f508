"""Who is asking: the facts about a session, read from the database or the admission cache.

A proxied request is decided on a few facts about its session — the user, their groups,
whether the session's second factor is verified, when it was last confirmed and how. They
are read through one small interface, :class:`FactSource`, with two implementations: the
database (:class:`StoredFacts`, on the full admission, a thread hop) and the admission cache
(:class:`RememberedFacts`, on the event loop). Both hand back the same :class:`Facts`, and
the decision's subject is built from them by one function (:func:`tiers.context.subject_from`),
so a request decided from memory is decided on exactly what the database said.

The second factor is checked the way django-otp's ``OTPMiddleware`` does it, with its public
pieces only: the device named by the session's ``otp_device_id``
(:meth:`django_otp.models.Device.from_persistent_id`) must exist, be confirmed and belong to
the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user, get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.sessions.backends.base import SessionBase
from django.utils.crypto import constant_time_compare
from django.utils.module_loading import import_string
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.models import Device

from portal.accounts.mfa import AMR_KEY, DEFAULT_AMR, MFA_TIME_KEY
from streaming.proxy.assertion import Identity
from tiers.context import subject_from, user_groups
from tiers.types import Subject

if TYPE_CHECKING:
    from streaming.proxy.admission_cache import AdmissionCache

__all__ = ["FactSource", "Facts", "RememberedFacts", "StoredFacts", "verified_device"]


@dataclass(frozen=True, slots=True)
class Facts:
    """What the decision and the assertion need to know about the session's user."""

    user_id: int
    identity: Identity  # tier left empty: filled in per request
    groups: frozenset[str]
    is_active: bool
    verified: bool  # the session's second factor is confirmed
    mfa_time: float | None

    def subject(self, now: float) -> Subject:
        """The user as the decision sees them at ``now``."""
        return subject_from(self.identity.username, self.groups, is_active=self.is_active,
                            mfa_time=self.mfa_time, amr=self.identity.amr, now=now)


class FactSource(Protocol):
    """Where an admission reads the facts of a session."""

    def facts(self, session_key: str | None) -> Facts | None:
        """The facts of this session's user; None when nobody is signed in (or not known here)."""
        ...


class RememberedFacts:
    """Facts from the admission cache: no I/O, so it may run on the event loop."""

    def __init__(self, cache: AdmissionCache) -> None:
        self._cache = cache

    def facts(self, session_key: str | None) -> Facts | None:
        snapshot = self._cache.get(session_key)
        return None if snapshot is None else snapshot.facts


class StoredFacts:
    """Facts from the session store and the database (one per admission, in a worker thread).

    It keeps the session and the user it read: the full admission hands them to
    :func:`tiers.enforcement.authorize`, which looks up grants and one-time confirmations.
    """

    def __init__(self) -> None:
        self.session: SessionBase | None = None
        self.user: AbstractBaseUser | None = None

    def facts(self, session_key: str | None) -> Facts | None:
        engine = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
        self.session = session = engine(session_key)
        user, verified = _session_user(session)
        self.user = user
        if user is None:
            return None
        groups = user_groups(user)
        mfa_time = session.get(MFA_TIME_KEY)
        return Facts(user.pk, _identity(user, session, groups), groups, is_active=user.is_active,
                     verified=verified, mfa_time=float(mfa_time) if mfa_time is not None else None)


def verified_device(user: AbstractBaseUser, session: SessionBase) -> Device | None:
    """The device that verified this session, as ``OTPMiddleware`` decides it: the one the
    session names, confirmed and the user's own; None otherwise (the session is not changed)."""
    persistent_id = session.get(DEVICE_ID_SESSION_KEY)
    if not persistent_id:
        return None
    device = Device.from_persistent_id(persistent_id)
    if device is None or device.user_id != user.pk or not device.confirmed:
        return None
    return device


def _session_user(session: SessionBase) -> tuple[Any | None, bool]:
    """(user, second factor verified). A locked (inactive) user comes back unverified-but-known
    so the decision can deny them with its reason instead of a bare sign-in page."""
    holder = _SessionHolder(session)
    user = get_user(holder)  # type: ignore[arg-type]
    if user.is_authenticated:
        return user, verified_device(user, session) is not None
    user_id = session.get(SESSION_KEY)
    if user_id is None:
        return None, False
    locked = get_user_model()._default_manager.filter(pk=user_id, is_active=False).first()
    if locked is not None and constant_time_compare(session.get(HASH_SESSION_KEY, ""),
                                                    locked.get_session_auth_hash()):
        return locked, False
    return None, False


class _SessionHolder:
    """What :func:`django.contrib.auth.get_user` reads of a request: its session."""

    __slots__ = ("session",)

    def __init__(self, session: SessionBase) -> None:
        self.session = session


def _identity(user: Any, session: SessionBase, groups: frozenset[str]) -> Identity:
    last_login = getattr(user, "last_login", None)
    mfa_time = session.get(MFA_TIME_KEY)
    return Identity(
        subject=str(user.pk), username=user.get_username(), email=user.email or "",
        groups=tuple(sorted(groups)), tier="",
        amr=tuple(session.get(AMR_KEY) or DEFAULT_AMR),
        auth_time=int(last_login.timestamp()) if last_login else None,
        mfa_time=int(mfa_time) if mfa_time is not None else None,
    )
