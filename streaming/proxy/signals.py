"""The proxy hears policy changes (tiers.changes) and forgets what they could make wrong.

Each change drops the admission snapshots and catalog rows it touches (see
:mod:`streaming.proxy.admission_cache`), and wakes the live proxied sockets it concerns.
The bus calls :func:`forget` in this process right away, inside the change's transaction,
and again after it commits (when other processes hear it too), so a full admission that
read the old rows cannot store them after the drop went by.
"""

from __future__ import annotations

from typing import Any

from streaming.proxy.access import catalog_cache
from streaming.proxy.admission_cache import admission_cache
from tiers import changes
from tiers.changes import CatalogChanged, Change, SessionChanged, SubjectChanged

__all__ = ["connect", "forget"]


def _drop_message(change: Change) -> dict[str, Any]:
    """The admission cache's own terms: which user, which session, or everyone."""
    if isinstance(change, SubjectChanged):
        return {"all": True} if change.user_id is None else {"user": change.user_id}
    if isinstance(change, SessionChanged):
        return {"session": change.session_hash}
    return {"catalog": True}


def forget(change: Change) -> None:
    """Drop what ``change`` touches in this process."""
    if isinstance(change, CatalogChanged):
        catalog_cache.clear()
    admission_cache.apply(_drop_message(change))


def connect() -> None:
    changes.subscribe(forget, at_once=True)
