"""Changes that must reach the proxy's memory at once: pushed, in this process and all others.

Each receiver drops what the change could make wrong (see
:mod:`streaming.proxy.admission_cache`): in this process right away, and again after the
transaction commits — when it is also broadcast to every other portal process — so a full
admission that read the old rows cannot store them after the drop went by.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.accounts.lockout import account_locked
from portal.broadcast import broadcast
from streaming.proxy.admission_cache import GROUP, admission_cache
from tiers.context import session_hash
from tiers.models import ActionRule, NetworkZone, Resource, Tier

__all__ = ["announce"]

User = get_user_model()


def announce(**change: Any) -> None:
    """Drop what ``change`` (user=pk | session=hash | catalog=True) touches, everywhere."""
    admission_cache.apply(change)

    def after_commit() -> None:
        admission_cache.apply(change)
        broadcast(GROUP, {"type": "admission.drop", **change})

    transaction.on_commit(after_commit)


def _user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    announce(user=instance.pk)


def _groups_changed(sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any,
                    **kwargs: Any) -> None:
    if not action.startswith("post_"):
        return
    if not reverse:
        announce(user=instance.pk)
    elif action == "post_clear":
        announce(all=True)  # a group emptied: who was in it is no longer known here
    else:
        for pk in pk_set or ():
            announce(user=pk)


def _device_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    announce(user=instance.user_id)


def _session_changed(sender: Any, instance: Session, **kwargs: Any) -> None:
    announce(session=session_hash(instance.session_key))


def _signed_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        announce(user=user.pk)


def _locked(sender: Any, user: Any, **kwargs: Any) -> None:
    announce(user=user.pk)


def _catalog_changed(sender: Any, **kwargs: Any) -> None:
    announce(catalog=True)


def _group_changed(sender: Any, **kwargs: Any) -> None:
    announce(all=True)  # renamed or deleted (a delete removes memberships without m2m signals)


def connect() -> None:
    for signal in (post_save, post_delete):
        signal.connect(_user_changed, sender=User, dispatch_uid=f"proxy-user-{signal is post_save}")
        signal.connect(_session_changed, sender=Session, dispatch_uid=f"proxy-session-{signal is post_save}")
        for device in (TOTPDevice, StaticDevice):
            signal.connect(_device_changed, sender=device,
                           dispatch_uid=f"proxy-device-{device.__name__}-{signal is post_save}")
        for model in (Resource, Tier, ActionRule, NetworkZone):
            signal.connect(_catalog_changed, sender=model,
                           dispatch_uid=f"proxy-catalog-{model.__name__}-{signal is post_save}")
        signal.connect(_group_changed, sender=Group, dispatch_uid=f"proxy-group-{signal is post_save}")
    m2m_changed.connect(_groups_changed, sender=User.groups.through, dispatch_uid="proxy-user-groups")
    m2m_changed.connect(_catalog_changed, dispatch_uid="proxy-catalog-m2m-remote")
    user_logged_out.connect(_signed_out, dispatch_uid="proxy-signed-out")
    account_locked.connect(_locked, dispatch_uid="proxy-account-locked")
