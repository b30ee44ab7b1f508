"""Telling every portal process something at once, from any code, through the channel layer.

Enforcement points keep short-lived state (a live desktop session, the proxy's admission
snapshots); changes that must end or re-check it are pushed to a channel-layer group. With
Redis the group spans every process; with the in-memory layer, this process alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

__all__ = ["broadcast"]

log = structlog.get_logger(__name__)
_PENDING: set[asyncio.Task] = set()


def broadcast(group: str, message: dict[str, Any]) -> None:
    """Send ``message`` to every channel in ``group``.

    Callable from sync code in any thread, even one that runs an event loop. A failure is
    logged, not raised: the change being announced must not fail because of it, and every
    listener has its own safety net (a periodic re-check, a short time to live).
    """
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    try:
        if loop is None:
            async_to_sync(layer.group_send)(group, message)
        else:
            task = loop.create_task(layer.group_send(group, message))
            _PENDING.add(task)
            task.add_done_callback(_PENDING.discard)
    except Exception as exc:  # the channel layer (Redis) is down
        log.warning("broadcast.failed", group=group, error=f"{type(exc).__name__}: {exc}")
