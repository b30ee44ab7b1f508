"""Retention: each app removes what a tier no longer keeps, through a hook it registers here.

Each tier says how long (``Tier.retention_days``). The audit chain itself is never pruned
(its rows are the proof); each removal is an event in it instead, with what was removed
and, for recordings, the SHA-256 the file had, so the removal itself is evidence.

The ledger sits below the apps whose records go (the proxy's access records, the desktop's
recordings: pyproject.toml, ``[tool.importlinter]``), so it does not import them: each app
registers a hook from its ``AppConfig.ready`` and the retention job runs every hook.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.utils import timezone

__all__ = ["JOB_ACTOR", "RetentionHook", "apply_retention", "register_retention", "retention_hooks"]

JOB_ACTOR = "job:retention"  # a colon: no username can take this name

RetentionHook = Callable[[datetime], dict[str, int]]
"""Remove what is older than its tier keeps at ``now``, audit each removal; return counts by kind."""

_HOOKS: dict[str, RetentionHook] = {}


def register_retention(name: str, hook: RetentionHook) -> None:
    """Add (or replace) an app's retention hook; call it from the app's ``AppConfig.ready``."""
    _HOOKS[name] = hook


def retention_hooks() -> dict[str, RetentionHook]:
    """The hooks registered so far, by name (a copy: the job's view of them)."""
    return dict(_HOOKS)


def apply_retention(now: datetime | None = None) -> dict[str, int]:
    """Run every app's hook; return the counts of all of them together (idempotent)."""
    now = now or timezone.now()
    removed: dict[str, int] = {}
    for hook in retention_hooks().values():
        for kind, count in hook(now).items():
            removed[kind] = removed.get(kind, 0) + count
    return removed
