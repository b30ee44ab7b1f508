"""One bus for policy changes: model signals become three domain events, delivered once.

Enforcement points keep state a change can make wrong (the proxy's admission and catalog
caches, the zone table, live desktops). Each used to wire its own Django receivers, with
different coverage. Here every change that can alter a decision becomes one typed event:

- :class:`SubjectChanged`: what a decision knows about a person (account, lock, groups,
  second factors, grants, sign-out); ``user_id`` None means everyone (a group renamed).
- :class:`SessionChanged`: a portal session was saved (MFA, step-up, new key) or ended.
- :class:`CatalogChanged`: resources, tiers, action rules, zones or sharing.

:func:`publish` hands an event to the subscribers that asked for it ``at_once`` (a cache
that a concurrent read could refill drops now *and* after commit), and queues it on the
transaction. When the transaction commits, each event is delivered once, in this order:
subscribers that keep per-process state; every other portal process through the
channel-layer group :data:`GROUP` (one message per transaction); then subscribers whose own
action already reaches every process (pushes to live desktops' groups) — so a desktop's
pushed re-check anywhere finds that process's caches already dropped. A rolled-back
transaction publishes nothing after commit. docs/decisions/0027.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from portal.accounts.lockout import account_locked
from portal.broadcast import broadcast
from tiers.context import session_hash
from tiers.models import AccessGrant, ActionRule, NetworkZone, Resource, Tier

__all__ = [
    "GROUP",
    "CatalogChanged",
    "Change",
    "SessionChanged",
    "SubjectChanged",
    "connect",
    "decode",
    "deliver",
    "encode",
    "publish",
    "subscribe",
    "unsubscribe",
]

logger = logging.getLogger(__name__)

GROUP = "policy-changes"
MESSAGE_TYPE = "policy.changes"
_ORIGIN = uuid.uuid4().hex  # this process: it does not act twice on what it published itself
_PER_MESSAGE = 200  # changes per broadcast message (a lock may end many sessions)


@dataclass(frozen=True, slots=True)
class SubjectChanged:
    """What a decision knows about a person changed; ``user_id`` None: every person."""

    user_id: int | None
    why: str
    by: str = ""  # who made the change, when a person did (a lock names the admin)


@dataclass(frozen=True, slots=True)
class SessionChanged:
    """A portal session (by the hash of its key) was saved, or ``ended`` (deleted)."""

    session_hash: str
    user_id: int | None = None  # whose it was, when it ended signed in
    ended: bool = False


@dataclass(frozen=True, slots=True)
class CatalogChanged:
    """Resources, tiers, rules or zones changed; ``resource_ids`` None: every resource."""

    resource_ids: frozenset[int] | None
    tier_ids: frozenset[int] = field(default_factory=frozenset)
    why: str = "catalog changed"


Change = SubjectChanged | SessionChanged | CatalogChanged
Handler = Callable[[Change], None]


ALL_KINDS: tuple[type, ...] = (SubjectChanged, SessionChanged, CatalogChanged)


@dataclass(frozen=True)
class _Subscriber:
    handler: Handler
    kinds: tuple[type, ...]
    at_once: bool
    heard: bool


_subscribers: list[_Subscriber] = []


def subscribe(handler: Handler, *, to: tuple[type, ...] = ALL_KINDS, at_once: bool = False,
              heard: bool = True) -> None:
    """Call ``handler`` with each change of the kinds ``to`` after it commits.

    ``at_once``: also the moment it is made, inside its transaction (caches drop now, and
    again after commit, so a read racing the change cannot keep old rows). ``heard``: also
    for changes made in other processes; False for a subscriber whose action reaches every
    process by itself. Subscribing the same handler again replaces it (``ready()`` may rerun).
    """
    _subscribers[:] = [s for s in _subscribers if s.handler != handler]
    _subscribers.append(_Subscriber(handler, to, at_once, heard))


def unsubscribe(handler: Handler) -> None:
    """Stop calling ``handler`` (a test's listener, once the test is over)."""
    _subscribers[:] = [s for s in _subscribers if s.handler != handler]


def _run(change: Change, subscribers: Iterable[_Subscriber]) -> None:
    for subscriber in subscribers:
        if not isinstance(change, subscriber.kinds):
            continue
        try:
            subscriber.handler(change)
        except Exception:  # one enforcement point failing must not stop the others hearing
            logger.exception("policy change subscriber failed", extra={"change": repr(change)})


# --- publishing --------------------------------------------------------------------------


class _Batch:
    """The changes of one transaction, delivered once when it commits.

    Repeats fold, and so do a person's changes (a deleted account also deletes its devices
    and grants): one :class:`SubjectChanged` per person, the one naming who made it if any,
    else the last (the cascade's cause comes after its effects).
    """

    def __init__(self) -> None:
        self.changes: dict[object, Change] = {}

    def add(self, change: Change) -> None:
        key: object = ("subject", change.user_id) if isinstance(change, SubjectChanged) else change
        kept = self.changes.get(key)
        if not (isinstance(kept, SubjectChanged) and kept.by and not getattr(change, "by", "")):
            self.changes[key] = change

    def __call__(self) -> None:
        _committed(list(self.changes.values()))


def _batch_of_this_transaction() -> _Batch | None:
    """The batch queued on the open transaction (a new one if none), None outside one."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        return None
    # A rolled-back transaction (or savepoint) discards its hooks, this batch with them.
    for hook in connection.run_on_commit:
        if isinstance(hook[1], _Batch):
            return hook[1]
    batch = _Batch()
    transaction.on_commit(batch)
    return batch


def publish(change: Change) -> None:
    """Announce ``change``: to ``at_once`` subscribers now, to everyone once it commits."""
    _run(change, (s for s in _subscribers if s.at_once))
    batch = _batch_of_this_transaction()
    if batch is None:
        _committed([change])
    else:
        batch.add(change)


def _committed(changes: list[Change]) -> None:
    local = [s for s in _subscribers if s.heard]
    for change in changes:
        _run(change, local)
    for start in range(0, len(changes), _PER_MESSAGE):
        broadcast(GROUP, encode(changes[start:start + _PER_MESSAGE]))
    pushing = [s for s in _subscribers if not s.heard]
    for change in changes:
        _run(change, pushing)


# --- the wire between processes ----------------------------------------------------------


def _change_fields(change: Change) -> dict[str, Any]:
    if isinstance(change, SubjectChanged):
        return {"kind": "subject", "user_id": change.user_id, "why": change.why, "by": change.by}
    if isinstance(change, SessionChanged):
        return {"kind": "session", "session_hash": change.session_hash, "user_id": change.user_id,
                "ended": change.ended}
    resources = None if change.resource_ids is None else sorted(change.resource_ids)
    return {"kind": "catalog", "resource_ids": resources, "tier_ids": sorted(change.tier_ids),
            "why": change.why}


def encode(changes: Iterable[Change]) -> dict[str, Any]:
    """One channel-layer message carrying ``changes`` (plain JSON-able values only)."""
    return {"type": MESSAGE_TYPE, "origin": _ORIGIN, "changes": [_change_fields(c) for c in changes]}


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _decode_one(item: dict[str, Any]) -> Change:
    kind = item["kind"]
    if kind == "subject":
        return SubjectChanged(_optional_int(item["user_id"]), str(item["why"]), str(item.get("by", "")))
    if kind == "session":
        return SessionChanged(str(item["session_hash"]), _optional_int(item.get("user_id")),
                              bool(item.get("ended")))
    if kind == "catalog":
        resources = item["resource_ids"]
        return CatalogChanged(None if resources is None else frozenset(int(r) for r in resources),
                              frozenset(int(t) for t in item.get("tier_ids") or ()), str(item.get("why", "")))
    raise ValueError(f"unknown change kind {kind!r}")


def decode(message: dict[str, Any]) -> list[Change]:
    """The changes in a message from :func:`encode`; ValueError for anything else."""
    if message.get("type") != MESSAGE_TYPE:
        raise ValueError(f"not a policy change message: {message.get('type')!r}")
    try:
        return [_decode_one(item) for item in message["changes"]]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed policy change message: {exc}") from exc


def deliver(message: dict[str, Any]) -> None:
    """A message heard on :data:`GROUP`: run this process's ``heard`` subscribers on it."""
    if message.get("origin") == _ORIGIN:
        return  # published here: already delivered after commit
    try:
        changes = decode(message)
    except ValueError:
        logger.warning("ignored a malformed policy change message", exc_info=True)
        return
    local = [s for s in _subscribers if s.heard]
    for change in changes:
        _run(change, local)



# --- model signals become changes ----------------------------------------------------------

_NOT_POLICY = frozenset({"last_login"})  # saved on every sign-in; no decision reads it


def _user_saved(sender: Any, instance: Any, created: bool, update_fields: Any = None, **kwargs: Any) -> None:
    if created or (update_fields and set(update_fields) <= _NOT_POLICY):
        return  # a new account has nothing anyone remembers yet
    publish(SubjectChanged(instance.pk, "user changed"))


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    publish(SubjectChanged(instance.pk, "user deleted"))


def _people(instance: Any, reverse: bool, action: str, pk_set: Any) -> list[int | None]:
    """Whose memberships an m2m signal on a user relation changed (None: anyone's)."""
    if not reverse:
        return [instance.pk]
    if action == "post_clear":
        return [None]  # a group emptied: who was in it is no longer known here
    return sorted(pk_set or ())


def _memberships_changed(why: str) -> Callable[..., None]:
    def receiver(sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any) -> None:
        if action.startswith("post_"):
            for user_id in _people(instance, reverse, action, pk_set):
                publish(SubjectChanged(user_id, why))
    return receiver


def _group_saved(sender: Any, instance: Group, created: bool = False, **kwargs: Any) -> None:
    if not created:  # renamed or deleted (a delete drops memberships without m2m signals)
        publish(SubjectChanged(None, "group changed"))


def _group_permissions_changed(sender: Any, action: str, **kwargs: Any) -> None:
    if action.startswith("post_"):
        publish(SubjectChanged(None, "group permissions changed"))


def _device_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    why = "second factor removed" if kwargs.get("signal") is post_delete else "second factor changed"
    publish(SubjectChanged(instance.user_id, why))


def _grant_changed(sender: Any, instance: AccessGrant, **kwargs: Any) -> None:
    publish(SubjectChanged(instance.user_id, "access grant changed"))


def _session_saved(sender: Any, instance: Session, **kwargs: Any) -> None:
    publish(SessionChanged(session_hash(instance.session_key)))


def _session_deleted(sender: Any, instance: Session, **kwargs: Any) -> None:
    user_id = instance.get_decoded().get("_auth_user_id")  # {} when unreadable
    publish(SessionChanged(session_hash(instance.session_key),
                           int(user_id) if str(user_id or "").isdigit() else None, ended=True))


def _signed_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        publish(SubjectChanged(user.pk, "signed out"))


def _locked(sender: Any, user: Any, why: str = "account locked", by: str = "", **kwargs: Any) -> None:
    publish(SubjectChanged(user.pk, why, by))


def _resource_changed(sender: Any, instance: Resource, **kwargs: Any) -> None:
    publish(CatalogChanged(frozenset({instance.pk}), why="resource changed"))


def _tier_changed(sender: Any, instance: Tier, **kwargs: Any) -> None:
    publish(CatalogChanged(frozenset(), frozenset({instance.pk}), why="tier changed"))


def _rule_changed(sender: Any, instance: ActionRule, **kwargs: Any) -> None:
    publish(CatalogChanged(frozenset({instance.resource_id}), why="action rules changed"))


def _zone_changed(sender: Any, instance: NetworkZone, **kwargs: Any) -> None:
    publish(CatalogChanged(None, why="network zones changed"))


def _sharing_changed(sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any,
                     **kwargs: Any) -> None:
    """Who a resource is shared with (either side of the relation)."""
    if not action.startswith("post_"):
        return
    if not reverse:
        publish(CatalogChanged(frozenset({instance.pk}), why="sharing changed"))
    elif action == "post_clear":
        publish(CatalogChanged(None, why="sharing changed"))
    else:
        publish(CatalogChanged(frozenset(pk_set or ()), why="sharing changed"))


def _tier_zones_changed(sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any,
                        **kwargs: Any) -> None:
    """Which zones a tier allows (either side of the relation)."""
    if not action.startswith("post_"):
        return
    if not reverse:
        publish(CatalogChanged(frozenset(), frozenset({instance.pk}), why="tier zones changed"))
    elif action == "post_clear":
        publish(CatalogChanged(None, why="tier zones changed"))
    else:
        publish(CatalogChanged(frozenset(), frozenset(pk_set or ()), why="tier zones changed"))


def _on_save_and_delete(receiver: Callable[..., None], model: Any, name: str) -> None:
    for signal, verb in ((post_save, "save"), (post_delete, "delete")):
        signal.connect(receiver, sender=model, dispatch_uid=f"changes-{name}-{verb}")


def connect() -> None:
    """Turn the model signals into changes (from ``TiersConfig.ready``, when every model,
    passkeys included, is loaded)."""
    from django_otp import device_classes

    user = get_user_model()
    post_save.connect(_user_saved, sender=user, dispatch_uid="changes-user-save")
    post_delete.connect(_user_deleted, sender=user, dispatch_uid="changes-user-delete")
    m2m_changed.connect(_memberships_changed("group membership changed"), sender=user.groups.through,
                        dispatch_uid="changes-user-groups", weak=False)
    m2m_changed.connect(_memberships_changed("permissions changed"), sender=user.user_permissions.through,
                        dispatch_uid="changes-user-permissions", weak=False)
    _on_save_and_delete(_group_saved, Group, "group")
    m2m_changed.connect(_group_permissions_changed, sender=Group.permissions.through,
                        dispatch_uid="changes-group-permissions")
    for device in device_classes():  # TOTP, backup codes, passkeys: every django-otp device
        _on_save_and_delete(_device_changed, device, f"device-{device._meta.label_lower}")
    post_save.connect(_session_saved, sender=Session, dispatch_uid="changes-session-save")
    post_delete.connect(_session_deleted, sender=Session, dispatch_uid="changes-session-delete")
    user_logged_out.connect(_signed_out, dispatch_uid="changes-signed-out")
    account_locked.connect(_locked, dispatch_uid="changes-account-locked")
    _on_save_and_delete(_grant_changed, AccessGrant, "grant")
    _on_save_and_delete(_resource_changed, Resource, "resource")
    _on_save_and_delete(_tier_changed, Tier, "tier")
    _on_save_and_delete(_rule_changed, ActionRule, "rule")
    _on_save_and_delete(_zone_changed, NetworkZone, "zone")
    for through in (Resource.allowed_groups.through, Resource.allowed_users.through):
        m2m_changed.connect(_sharing_changed, sender=through,
                            dispatch_uid=f"changes-{through._meta.label_lower}")
    m2m_changed.connect(_tier_zones_changed, sender=Tier.allowed_zones.through,
                        dispatch_uid="changes-tier-zones")
