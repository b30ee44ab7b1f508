"""Channel-layer group names: where revocations and kills are pushed to live sessions."""

from __future__ import annotations

import uuid

__all__ = ["for_resource", "for_session", "for_tier", "for_user", "for_watch"]


def for_session(session_id: uuid.UUID | str) -> str:
    return f"desktop.session.{session_id}"


def for_user(user_id: int) -> str:
    return f"desktop.user.{user_id}"


def for_resource(resource_id: int) -> str:
    return f"desktop.resource.{resource_id}"


def for_tier(tier_id: int) -> str:
    return f"desktop.tier.{tier_id}"


def for_watch(watch_id: uuid.UUID | str) -> str:
    return f"desktop.watch.{watch_id}"
