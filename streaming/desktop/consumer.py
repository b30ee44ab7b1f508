"""The Guacamole WebSocket tunnel: a thin relay between one browser and guacd.

It opens the tunnel (checks and ticket: :mod:`.opening`; channel groups; the guacd handshake
the browser never sees), relays both ways and closes. The pure gate (:mod:`.gate`) says what
each instruction may do, the pure clock (:mod:`.clock`) when to decide again, warn and end,
and the :class:`~.supervisor.Supervisor` carries out what needs the database or the page.
Allowed instructions travel as the slices they arrived as. No frame is dropped for want of
buffer space: each read from guacd is sent (and awaited) before the next; browser input is
written once per burst (:class:`~.relay.BurstRelay`), and past its bound after guacd took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from channels.db import database_sync_to_async as in_thread
from django.conf import settings

from streaming.desktop import broker
from streaming.desktop.gate import FORWARD, INPUT, By, Ending, Gate, end_status
from streaming.desktop.guacamole import protocol as wire
from streaming.desktop.guacamole.browser import check_browser_instruction
from streaming.desktop.guacamole.guacd import GuacdConnection, GuacdError, open_guacd
from streaming.desktop.models import EndReason, StreamSession, StreamWatch
from streaming.desktop.opening import Opening, read_opening, redeem
from streaming.desktop.parameters import ParameterError
from streaming.desktop.relay import BurstRelay
from streaming.desktop.supervisor import Supervisor
from streaming.desktop.vault import VaultError
from streaming.isolation import pool
from streaming.isolation.launches import IsolationUnavailable

__all__ = ["DesktopTunnelConsumer"]

log = structlog.get_logger(__name__)

MAX_MESSAGE_CHARS = 64 * 1024


class DesktopTunnelConsumer(BurstRelay):
    """One browser tab's desktop session (or an admin's read-only view of one)."""

    guacd: GuacdConnection | None = None  # until the handshake; the receive hook may look first
    gate: Gate | None = None
    ended = False

    # -- opening ------------------------------------------------------------------------

    async def connect(self) -> None:
        self.supervisor: Supervisor | None = None
        self.joined: list[str] = []
        self.tasks: list[asyncio.Task] = []
        opening = await in_thread(read_opening)(self.scope)
        if opening is None:
            await self.close()  # refuses the handshake: another site's page, no session, no MFA
            return
        self.username = opening.user.get_username()
        await self.accept("guacamole")
        await self.send(text_data=wire.encode_utf16("", opening.tunnel_id))
        try:
            stream, watch = await in_thread(redeem)(opening)
        except broker.TicketError as exc:
            self.ended = True
            await self.send(text_data=wire.encode_utf16("error", str(exc), wire.Status.CLIENT_UNAUTHORIZED))
            await self.close(code=1000, reason=str(wire.Status.CLIENT_UNAUTHORIZED))
            return
        self.supervisor = Supervisor(self, opening, stream, watch)
        for group in self.supervisor.groups():
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)
        if await (self._join_guacd(opening, stream, watch) if watch else self._open_guacd(opening, stream)):
            self.gate, self.clock = self.supervisor.gate, await self.supervisor.start(opening)
            self.tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self.supervisor.run())]

    async def _open_guacd(self, opening: Opening, stream: StreamSession) -> bool:
        """The guacd handshake for the session's target; the browser never sees its parameters."""
        try:
            parameters = await in_thread(broker.handshake_parameters)(
                stream, portal_session_key=self.scope["session"].session_key,
                host_header=opening.host, server=self.scope.get("server"))
            protocol = await in_thread(broker.guacd_protocol)(stream.resource)
            self.guacd = await open_guacd(
                settings.GUACD_HOST, settings.GUACD_PORT, protocol=protocol,
                parameters=parameters, screen=opening.screen, tls=broker.guacd_tls())
        except pool.NoSlotFree as exc:
            failure = (f"Every isolated desktop is in use right now ({exc.state.in_use} of "
                       f"{exc.state.total}). Try again in a minute.")
        except IsolationUnavailable as exc:
            failure = f"This app cannot be isolated here: {exc}."
        except (GuacdError, VaultError, ParameterError) as exc:
            log.warning("desktop.guacd_failed", session=str(stream.pk), error=str(exc))
            failure = ("The desktop service cannot be reached right now. Try again in a minute; "
                       "if it keeps failing, tell IT.")
        else:
            await in_thread(broker.mark_live)(stream, self.guacd.connection_id)
            return True
        finally:
            parameters = None  # the target's credentials leave memory with the handshake
        await self.end(EndReason.GUACD_ERROR, failure)
        return False

    async def _join_guacd(self, opening: Opening, stream: StreamSession, watch: StreamWatch) -> bool:
        """Join the running guacd connection read-only; the target's credentials are not needed."""
        try:
            self.guacd = await open_guacd(
                settings.GUACD_HOST, settings.GUACD_PORT, join=stream.guacd_connection_id,
                parameters={"read-only": "true"}, screen=opening.screen, tls=broker.guacd_tls())
        except GuacdError as exc:
            log.warning("desktop.watch_failed", watch=str(watch.pk), error=str(exc))
            await self.end(EndReason.GUACD_ERROR, "The session could not be joined: it may have just ended.")
            return False
        await in_thread(broker.mark_watching)(watch, self.guacd.connection_id)
        return True

    # -- browser -> guacd ----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.ended or self.gate is None:
            return
        try:
            if text_data is None or len(text_data) > MAX_MESSAGE_CHARS:
                raise wire.ProtocolError("a binary WebSocket frame" if text_data is None
                                    else f"a message longer than {MAX_MESSAGE_CHARS} characters")
            reader = wire.InstructionReader(wire.BROWSER_LIMITS)
            reader.feed_text(text_data)
            if reader.pending:
                raise wire.ProtocolError("a message that ends inside an instruction")
            forward: list[str] = []
            while not self.ended and (instruction := reader.pop()) is not None:
                check_browser_instruction(instruction)
                step = self.gate.from_browser(instruction)
                if step is INPUT:
                    self.clock.touch(time.monotonic())
                elif step is not FORWARD:
                    step = await self.supervisor.carry_out(step)
                if step.forward:
                    forward.append(instruction.for_guacd())
            # Queued, and flushed when the burst ends; past the bound, wait for guacd (never drop).
            if forward and not self.ended and self.guacd.queue_text("".join(forward)):
                await self.guacd.drain()
        except wire.ProtocolError as exc:
            log.warning("desktop.protocol_error", session=str(self.supervisor.stream.pk), error=str(exc))
            await self.end(EndReason.PROTOCOL_ERROR,
                           f"The session was closed because the browser sent {exc}, which is not allowed.")
        except (ConnectionError, OSError):
            await self.end(EndReason.TARGET_CLOSED, "The desktop service closed the connection.")

    # -- guacd -> browser ----------------------------------------------------------------

    async def _pump(self) -> None:
        ending = Ending(EndReason.TARGET_CLOSED, "The desktop ended the connection.", By.TARGET)
        session = self.supervisor.stream.pk
        try:
            while (text := await self.guacd.read_frames()) is not None:
                said = None
                if self.gate.watches_guacd(text):
                    text, said = await self.supervisor.from_guacd(text)
                else:
                    text = wire.to_browser_counting(text)  # guacd counts code points, the browser UTF-16
                if text:
                    await self.send(text_data=text)
                if said is not None:  # guacd's error is terminal: the session's end message carries it
                    log.warning("desktop.guacd_reported_error", session=str(session), **said.log)
                    ending = said
                    break
        except wire.ProtocolError as exc:
            log.warning("desktop.guacd_protocol_error", session=str(session), error=str(exc))
            ending = Ending(EndReason.GUACD_ERROR, "The desktop service sent data the portal could not read.")
        except (ConnectionError, OSError):
            pass
        await self.end(ending.reason, ending.message, by=ending.by.value)

    # -- the relay's port for the supervisor ----------------------------------------------

    async def to_browser(self, text: str) -> None:
        await self.send(text_data=text)

    def to_guacd(self, text: str) -> None:
        self.guacd.queue_text(text)
        self.flush_input()

    def flush_input(self) -> None:
        """Hand the browser input queued so far to guacd's socket (one write, never blocks)."""
        if self.guacd is not None and not self.ended:
            # guacd gone: the pump sees it and ends the session with the reason.
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                self.guacd.flush()

    # -- pushed events (channel layer) ---------------------------------------------------

    async def desktop_recheck(self, event: dict[str, Any]) -> None:
        """Something this session depends on changed: decide again now."""
        self.supervisor.pushed(str(event.get("by", ""))[:150])

    async def desktop_kill(self, event: dict[str, Any]) -> None:
        by = str(event.get("by", "an administrator"))[:150]
        await self.end(EndReason.KILLED, f"An administrator ({by}) ended this session.", by=by)

    async def desktop_watched_ended(self, event: dict[str, Any]) -> None:
        """The session this admin watches ended (lock, kill, sign-out...): the view ends too."""
        if self.supervisor.watch is not None:  # else the session's own relay: it ended it
            message, by = str(event.get("message", ""))[:300], str(event.get("by", ""))[:150] or "portal"
            await self.end(EndReason.TARGET_CLOSED, f"The session you were watching ended: {message}", by=by)

    async def desktop_stepped_up(self, event: dict[str, Any]) -> None:
        """The user entered a fresh code on the desktop page (which rotated the session key)."""
        self.supervisor.stepped_up(event.get("user_id"), str(event.get("session_key") or ""))

    # -- the end -------------------------------------------------------------------------

    async def disconnect(self, code: int) -> None:
        if self.supervisor is not None and not self.ended:
            await self.end(EndReason.CLOSED, "The browser closed the desktop.", by=self.username,
                           notify=False)
        await self._leave()

    async def end(self, reason: EndReason, message: str, *, by: str = "portal", notify: bool = True) -> None:
        """End the session once: tell the page, close guacd, write the record, then close."""
        if self.ended:
            return
        self.ended = True
        for task in (task for task in self.tasks if task is not asyncio.current_task()):
            task.cancel()
        status = end_status(reason)
        if notify:
            with contextlib.suppress(Exception):
                await self.supervisor.notice("ended", reason=str(reason), message=message)
                await self.send(text_data=wire.encode_utf16("error", message, status))
        if self.guacd is not None:
            await self.guacd.close()
        try:  # written before the socket closes: whoever sees the close can rely on the record
            await self.supervisor.record_end(reason, message, by=by, guacd=self.guacd)
        finally:
            if notify:
                with contextlib.suppress(Exception):
                    await self.close(code=1000, reason=str(status))
            await self._leave()

    async def _leave(self) -> None:
        while self.joined:
            await self.channel_layer.group_discard(self.joined.pop(), self.channel_name)
