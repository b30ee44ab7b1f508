"""Relay mechanics of a WebSocket consumer that streams: one write per burst, no sweep per message.

Browser messages that arrive in one read are handled one after another and their input is
queued; :class:`FlushBeforeWaiting` flushes the queue the moment the next ``receive`` would
have to wait. Channels sweeps old database connections (a thread hop) before every message;
a relay that touches the database only through ``database_sync_to_async`` (which cleans up in
its own thread) skips that sweep for its hottest message type (docs/performance.md,
"Desktop tunnel").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

__all__ = ["BurstRelay", "FlushBeforeWaiting"]


class FlushBeforeWaiting:
    """Await ``awaitable``, calling ``flush`` first if it cannot complete at once.

    Wrapped around the ASGI ``receive``: while browser messages are already queued (a burst
    that arrived in one read) each one completes at its first step and its input joins the
    queue for guacd; when the next ``receive`` would have to wait, the burst is over and the
    queue is flushed in one write, before the wait: one event-loop step after the burst's
    last message was handled, no timer. Everything after the first step is plain
    delegation, cancellation included.
    """

    __slots__ = ("_awaitable", "_flush")

    def __init__(self, awaitable: Awaitable[Any], flush: Callable[[], None]) -> None:
        self._awaitable = awaitable
        self._flush = flush

    def __await__(self) -> Generator[Any, Any, Any]:
        steps = self._awaitable.__await__()
        try:
            pending = steps.send(None)
        except StopIteration as done:
            return done.value
        self._flush()
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:  # thrown in (cancellation): hand it on
                try:
                    pending = steps.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = steps.send(sent)
                except StopIteration as done:
                    return done.value


class BurstRelay(AsyncWebsocketConsumer):
    """A WebSocket consumer whose :meth:`flush_input` runs when a burst of messages is over."""

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        async def receive_flushing() -> Any:
            return await FlushBeforeWaiting(receive(), self.flush_input)

        await super().__call__(scope, receive_flushing, send)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Browser messages go straight to their handler (no connection sweep first)."""
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
            return
        await super().dispatch(message)

    def flush_input(self) -> None:
        """Hand what the burst queued to its destination (never blocks)."""
