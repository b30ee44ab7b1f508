"""The Guacamole WebSocket tunnel: a thin, checked relay between one browser and guacd.

What guacamole-common-js's ``WebSocketTunnel`` needs from a relay: subprotocol
``guacamole``; a first message ``0.,36.<uuid>;``; only whole instructions in each message;
answers to its internal ``ping``. What the portal adds: the one-time ticket, the handshake
(the browser never sees it, nor the target's credentials), a check of every browser
instruction, the tier's clipboard and file controls, continuous re-authorization (periodic,
and at once when a revocation is pushed to one of our groups), idle and maximum duration.
An admin's read-only view ("watch" mode) runs through the same code: it joins the running
guacd connection by its id with ``read-only`` set (a join needs no target credentials), and
the relay drops every input instruction the watcher's browser sends, with an audit.
Frames are never dropped for want of buffer space: each read from guacd is sent (and
awaited) before the next read, so a slow browser slows guacd down through TCP. The other way,
the browser's instructions are queued and go to guacd in one write per burst: when the next
browser message is not already waiting (:class:`_FlushBeforeWaiting`), or at once when the
queue is past its bound, and then the relay awaits guacd before it reads more from the browser.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import structlog
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django_otp import DEVICE_ID_SESSION_KEY

from portal.audit.chain import record
from portal.network import is_trusted, resolve_client_address
from portal.origins import origin_matches
from streaming.desktop import broker, groups
from streaming.desktop.guacamole.browser import STREAM_OPCODES, check_browser_instruction
from streaming.desktop.guacamole.guacd import GuacdConnection, GuacdError, Screen, open_guacd
from streaming.desktop.guacamole.protocol import (
    BROWSER_LIMITS,
    GUACD_LIMITS,
    Instruction,
    InstructionReader,
    ProtocolError,
    encode_utf16,
    to_browser_counting,
)
from streaming.desktop.hold import WhileHeld, while_held
from streaming.desktop.models import EndReason, StreamSession, StreamWatch
from streaming.desktop.parameters import ParameterError
from streaming.desktop.reauth import Verdict, reauthorize, reauthorize_watcher
from streaming.desktop.signins import SIGN_IN_KEY, current_session
from streaming.desktop.vault import VaultError
from streaming.isolation import pool
from streaming.isolation.launches import IsolationUnavailable

__all__ = ["DesktopTunnelConsumer", "Status"]

log = structlog.get_logger(__name__)

MAX_MESSAGE_CHARS = 64 * 1024


class Status:
    """Guacamole status codes the browser client understands."""

    SUCCESS = 0x0000
    UPSTREAM_ERROR = 0x0203
    UPSTREAM_UNAVAILABLE = 0x0208
    SESSION_TIMEOUT = 0x020A
    SESSION_CLOSED = 0x020B
    CLIENT_BAD_REQUEST = 0x0300
    CLIENT_UNAUTHORIZED = 0x0301
    CLIENT_FORBIDDEN = 0x0303


_END_STATUS = {
    EndReason.CLOSED: Status.SUCCESS,
    EndReason.TARGET_CLOSED: Status.SESSION_CLOSED,
    EndReason.REVOKED: Status.CLIENT_FORBIDDEN,
    EndReason.KILLED: Status.SESSION_CLOSED,
    EndReason.IDLE: Status.SESSION_TIMEOUT,
    EndReason.MAX_DURATION: Status.SESSION_TIMEOUT,
    EndReason.STEP_UP_TIMEOUT: Status.CLIENT_UNAUTHORIZED,
    EndReason.SIGNED_OUT: Status.CLIENT_UNAUTHORIZED,
    EndReason.PROTOCOL_ERROR: Status.CLIENT_BAD_REQUEST,
    EndReason.GUACD_ERROR: Status.UPSTREAM_UNAVAILABLE,
    EndReason.TARGET_REFUSED: Status.CLIENT_UNAUTHORIZED,
    EndReason.TARGET_UNAVAILABLE: Status.UPSTREAM_UNAVAILABLE,
}

# What guacd's error statuses mean to the person in front of the desktop page. guacd's own
# text is for logs ("Aborted. See logs."); it is kept in the audit trail, not shown.
_REFUSED = ("The desktop refused the sign-in the portal keeps for it, so the session could not start. "
            "Ask an administrator to update the resource's stored credentials.")
_NOT_REACHED = ("The desktop could not be reached, or it refused the sign-in the portal keeps for it "
                "(the desktop service reports both the same way). Ask an administrator to check the "
                "resource's address and stored credentials.")
_GUACD_ERRORS: dict[int, tuple[EndReason, str]] = {
    0x0200: (EndReason.GUACD_ERROR, "The desktop service failed. Try again in a minute; if it keeps "
             "failing, tell IT."),
    0x0201: (EndReason.GUACD_ERROR, "The desktop service is busy. Try again in a minute."),
    0x0202: (EndReason.TARGET_UNAVAILABLE, "The desktop did not answer in time. Try again in a moment."),
    0x0203: (EndReason.TARGET_CLOSED, "The desktop ended the connection with an error."),
    0x0204: (EndReason.TARGET_CLOSED, "The desktop asked for something that does not exist."),
    # guacd 1.3's VNC support says "not found" for a wrong password too: say both, honestly.
    0x0207: (EndReason.TARGET_UNAVAILABLE, _NOT_REACHED),
    0x0208: (EndReason.TARGET_UNAVAILABLE, _NOT_REACHED),
    0x0209: (EndReason.TARGET_CLOSED, "Someone else's session took this desktop over."),
    0x020A: (EndReason.TARGET_CLOSED, "The desktop closed the session after a time-out."),
    0x020B: (EndReason.TARGET_CLOSED, "The desktop closed the session."),
    0x0301: (EndReason.TARGET_REFUSED, _REFUSED),  # CLIENT_UNAUTHORIZED: e.g. a failed SSH sign-in
    0x0303: (EndReason.TARGET_REFUSED, _REFUSED),  # CLIENT_FORBIDDEN
}


def describe_guacd_error(args: list[str] | tuple[str, ...]) -> tuple[EndReason, str]:
    """Why the session ended, and a sentence, for guacd's ``error`` instruction (message, status)."""
    try:
        status = int(args[1]) if len(args) > 1 else 0
    except ValueError:
        status = 0
    return _GUACD_ERRORS.get(status, (EndReason.TARGET_CLOSED,
                                      "The desktop service reported an error and ended the session."))


# Substrings that mark a run from guacd as worth parsing; base64 never contains "." or ",",
# so image data cannot fake them, and a false positive only costs a parse.
_GUACD_MARKERS = ("9.clipboard,", "4.file,", "5.error,")

_CONTROLS = {"clipboard.in": "clipboard_in", "clipboard.out": "clipboard_out",
             "file.transfer": "file_transfer"}
# What a watcher's browser may send: flow control only. Everything else is input and is dropped.
_WATCHER_MAY_SEND = frozenset({"sync", "nop", "ack"})
_WATCHER_OBLIGATIONS = {"clipboard_in": "deny", "clipboard_out": "deny", "file_transfer": "deny",
                        "read_only": True}

_HELD_MESSAGE = "Paused until a fresh code is entered. Try again after entering it."
# opcode -> (control, direction, index of the name argument)
_HELD_KINDS = {"clipboard": ("clipboard.in", "in", None), "file": ("file.transfer", "upload", 2),
               "put": ("file.transfer", "upload", 3), "get": ("file.transfer", "download", 1)}

_CONTROL_WORDS = {"clipboard.in": "Pasting into this desktop", "clipboard.out": "Copying out of this desktop",
                  "file.transfer": "File transfer"}


@dataclass
class _Transfer:
    """A clipboard or file stream the relay watches: its size and hash go to the audit trail."""

    kind: str
    direction: str
    name: str = ""
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


class _FlushBeforeWaiting:
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


def _query(scope: dict[str, Any]) -> dict[str, str]:
    parsed = parse_qs(scope.get("query_string", b"").decode("latin-1"), max_num_fields=8)
    return {k: v[0] for k, v in parsed.items()}


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        return min(hi, max(lo, int(value or default)))
    except ValueError:
        return default


def _from_own_origin(headers: dict[bytes, bytes], peer: str, scope_scheme: str) -> bool:
    """The handshake's Origin is exactly the portal's (scheme from a trusted proxy if one says)."""
    scheme = "https" if scope_scheme in ("wss", "https") else "http"
    proto = headers.get(b"x-forwarded-proto")
    if proto is not None and is_trusted(peer, settings.PORTAL_TRUSTED_PROXIES):
        scheme = proto.decode("latin-1").split(",")[0].strip().lower()
    origin = headers.get(b"origin")
    return origin_matches(origin.decode("latin-1") if origin is not None else None, scheme=scheme,
                          host=headers.get(b"host", b"").decode("latin-1"))


def _blob_size(data: str) -> tuple[int, bytes]:
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error:
        raw = b""
    return len(raw), raw


class DesktopTunnelConsumer(AsyncWebsocketConsumer):
    """One browser tab's desktop session."""

    guacd: GuacdConnection | None = None  # until the handshake; the receive hook may look first
    ended = False

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        async def receive_flushing() -> Any:
            return await _FlushBeforeWaiting(receive(), self._flush_input)

        await super().__call__(scope, receive_flushing, send)

    # -- opening ------------------------------------------------------------------------

    async def connect(self) -> None:
        self.stream: StreamSession | None = None
        self.watch: StreamWatch | None = None
        self.refused_input = 0
        self.refused_opcodes: set[str] = set()
        self.guacd: GuacdConnection | None = None
        self.joined: list[str] = []
        self.ended = False
        self.held_until: float | None = None
        self.pushed_by = ""
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.transfers_in: dict[str, _Transfer] = {}
        self.transfers_out: dict[str, _Transfer] = {}
        self.refused_in: set[str] = set()
        self.refused_out: set[str] = set()
        self.deferred_acks: dict[str, Instruction] = {}
        self.guacd_error: tuple[EndReason, str] | None = None
        self.guacd_error_detail: tuple[str, str] = ("", "")
        user = self.scope.get("user")
        session = self.scope.get("session")
        headers = dict(self.scope.get("headers", []))
        peer = (self.scope.get("client") or ("", 0))[0]
        if not _from_own_origin(headers, peer, self.scope.get("scheme", "ws")):
            await self.close()  # another site's page: refuse the handshake (cross-site WebSocket hijacking)
            return
        if ("guacamole" not in self.scope.get("subprotocols", [])
                or user is None or not user.is_authenticated or session is None
                or not await database_sync_to_async(lambda: bool(session.get(DEVICE_ID_SESSION_KEY)))()):
            await self.close()  # refuses the WebSocket handshake: no session, no tunnel
            return
        self.user = user
        self.session_key = session.session_key
        self.sign_in = str(session.get(SIGN_IN_KEY) or "")  # loaded above; survives a step-up's new key
        xff = headers.get(b"x-forwarded-for", b"").decode("latin-1") or None
        self.client_address = resolve_client_address(peer, xff, settings.PORTAL_TRUSTED_PROXIES)
        query = _query(self.scope)
        kwargs = self.scope["url_route"]["kwargs"]
        watch_id = kwargs.get("watch_id")
        session_id = watch_id or kwargs.get("session_id", "")
        screen = Screen(_int(query.get("width"), 1024, 320, 4096), _int(query.get("height"), 768, 240, 4096),
                        _int(query.get("dpi"), 96, 48, 400))

        await self.accept("guacamole")
        await self.send(text_data=encode_utf16("", session_id if len(session_id) == 36 else "0" * 36))
        if watch_id is not None:
            await self._connect_watcher(watch_id, query.get("ticket", ""), screen)
            return
        try:
            self.stream = await database_sync_to_async(broker.redeem_ticket)(
                session_id, user, query.get("ticket", ""))
        except broker.TicketError as exc:
            await self._refuse(str(exc), Status.CLIENT_UNAUTHORIZED)
            return
        self.obligations = dict(self.stream.obligations)
        for group in (groups.for_session(self.stream.pk), groups.for_user(user.pk),
                      groups.for_resource(self.stream.resource_id),
                      groups.for_tier(self.stream.resource.tier_id)):
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)
        try:
            parameters = await database_sync_to_async(broker.handshake_parameters)(
                self.stream, portal_session_key=self.scope["session"].session_key,
                host_header=headers.get(b"host", b"").decode("latin-1"), server=self.scope.get("server"))
            protocol = await database_sync_to_async(broker.guacd_protocol)(self.stream.resource)
            self.guacd = await open_guacd(
                settings.GUACD_HOST, settings.GUACD_PORT, protocol=protocol,
                parameters=parameters, screen=screen, tls=broker.guacd_tls())
        except pool.NoSlotFree as exc:
            await self._end(EndReason.GUACD_ERROR, "Every isolated desktop is in use right now "
                            f"({exc.state.in_use} of {exc.state.total}). Try again in a minute.",
                            by="portal")
            return
        except IsolationUnavailable as exc:
            await self._end(EndReason.GUACD_ERROR, f"This app cannot be isolated here: {exc}.", by="portal")
            return
        except (GuacdError, VaultError, ParameterError) as exc:
            log.warning("desktop.guacd_failed", session=str(self.stream.pk), error=str(exc))
            await self._end(EndReason.GUACD_ERROR, "The desktop service cannot be reached right now. "
                            "Try again in a minute; if it keeps failing, tell IT.", by="portal")
            return
        finally:
            parameters = None  # the target's credentials leave memory with the handshake
        await database_sync_to_async(broker.mark_live)(self.stream, self.guacd.connection_id)
        await self._start()

    async def _connect_watcher(self, watch_id: str, ticket: str, screen: Screen) -> None:
        """Join the running guacd connection read-only; the target's credentials are not needed."""
        try:
            self.watch = await database_sync_to_async(broker.redeem_watch_ticket)(watch_id, self.user, ticket)
        except broker.TicketError as exc:
            await self._refuse(str(exc), Status.CLIENT_UNAUTHORIZED)
            return
        self.stream = self.watch.stream
        self.obligations = {**self.stream.obligations, **_WATCHER_OBLIGATIONS}
        # A kill of the watched session ends the view too; a lock of the admin is pushed to their group.
        for group in (groups.for_watch(self.watch.pk), groups.for_session(self.stream.pk),
                      groups.for_user(self.user.pk)):
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)
        try:
            self.guacd = await open_guacd(
                settings.GUACD_HOST, settings.GUACD_PORT, join=self.stream.guacd_connection_id,
                parameters={"read-only": "true"}, screen=screen, tls=broker.guacd_tls())
        except GuacdError as exc:
            log.warning("desktop.watch_failed", watch=str(self.watch.pk), error=str(exc))
            await self._end(EndReason.GUACD_ERROR, "The session could not be joined: it may have just ended.",
                            by="portal")
            return
        await database_sync_to_async(broker.mark_watching)(self.watch, self.guacd.connection_id)
        await self._start()

    async def _start(self) -> None:
        now = time.monotonic()
        self.started = now
        self.last_input = now
        self.warned: set[str] = set()
        await self._notice("status", resource=self.stream.resource.name, tier=self.stream.tier_name,
                           ends_in=self._max_seconds(), idle_seconds=self._idle_seconds(),
                           watermark=self._watermark(), read_only=bool(self.obligations.get("read_only")),
                           watching=self.stream.user.get_username() if self.watch else "")
        self.tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._watch())]

    async def _refuse(self, message: str, status: int) -> None:
        self.ended = True
        await self.send(text_data=encode_utf16("error", message, status))
        await self.close(code=1000, reason=str(status))

    # -- browser -> guacd ----------------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Browser input goes straight to its handler.

        Channels sweeps old database connections (a thread hop) before every message; relayed
        input touches no database on the event loop (audits go through
        ``database_sync_to_async``, which cleans up in its own thread), so for the hottest
        message type that sweep is pure cost (docs/performance.md, "Desktop tunnel").
        """
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
            return
        await super().dispatch(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.ended:
            return
        try:
            if text_data is None:
                raise ProtocolError("a binary WebSocket frame")
            if len(text_data) > MAX_MESSAGE_CHARS:
                raise ProtocolError(f"a message longer than {MAX_MESSAGE_CHARS} characters")
            reader = InstructionReader(BROWSER_LIMITS)
            reader.feed_text(text_data)
            if reader.pending:
                raise ProtocolError("a message that ends inside an instruction")
            forward: list[str] = []
            while (instruction := reader.pop()) is not None:
                check_browser_instruction(instruction)
                if await self._from_browser(instruction):
                    forward.append(instruction.encode())
            # Queued, and flushed when the burst ends; past the bound, wait for guacd (never drop).
            guacd = self.guacd
            if forward and guacd is not None and not self.ended and guacd.queue_text("".join(forward)):
                await guacd.drain()
        except ProtocolError as exc:
            log.warning("desktop.protocol_error", session=str(getattr(self.stream, "pk", "")), error=str(exc))
            await self._end(EndReason.PROTOCOL_ERROR,
                            f"The session was closed because the browser sent {exc}, which is not allowed.",
                            by="portal")
        except (ConnectionError, OSError):
            await self._end(EndReason.TARGET_CLOSED, "The desktop service closed the connection.",
                            by="portal")

    def _flush_input(self) -> None:
        """Hand the browser input queued so far to guacd's socket (one write, never blocks)."""
        if self.guacd is not None and not self.ended:
            # guacd gone: the pump sees it and ends the session with the reason.
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                self.guacd.flush()

    async def _from_browser(self, ins: Instruction) -> bool:
        """Apply the tier to one browser instruction; True when it goes on to guacd."""
        op = ins.opcode
        if op == "":
            await self.send(text_data=ins.encode_utf16())  # internal ping: the relay answers
            return False
        if self.guacd is None:
            return False
        if self.watch is not None:
            return await self._from_watcher(ins)
        if self.held_until is not None:
            fate = while_held(op)
            if fate is not WhileHeld.FORWARD:
                await self._while_held(ins, fate)
                return False
        if op in ("key", "mouse", "touch"):
            self.last_input = time.monotonic()
            return True
        if op == "disconnect":
            await self._end(EndReason.CLOSED, "You closed the desktop.", by=self.user.get_username())
            return False
        if op == "clipboard":
            return await self._open_in(ins.args[0], "clipboard.in", "in", "")
        if op in ("file", "put"):
            stream, name = (ins.args[0], ins.args[2]) if op == "file" else (ins.args[1], ins.args[3])
            return await self._open_in(stream, "file.transfer", "upload", name)
        if op == "get":
            return await self._control_allowed("file.transfer", detail={"direction": "download",
                                                                        "name": ins.args[1]})
        if op in ("pipe", "argv", "audio"):
            await self.send(text_data=encode_utf16("ack", ins.args[0], "Not allowed on this portal.",
                                             Status.CLIENT_FORBIDDEN))
            self.refused_in.add(ins.args[0])
            return False
        if op in ("blob", "end"):
            stream = ins.args[0]
            if stream in self.refused_in:
                if op == "end":
                    self.refused_in.discard(stream)
                return False
            if (transfer := self.transfers_in.get(stream)) is not None:
                if op == "blob":
                    size, raw = _blob_size(ins.args[1])
                    transfer.size += size
                    transfer.digest.update(raw)
                else:
                    del self.transfers_in[stream]
                    await self._audit_transfer(transfer, "allowed")
        return True

    async def _while_held(self, ins: Instruction, fate: WhileHeld) -> None:
        """Carry out :func:`while_held` for one instruction; nothing here reaches guacd now."""
        op, args = ins.opcode, ins.args
        if fate is WhileHeld.DEFER:
            self.deferred_acks[args[0]] = ins  # the latest per stream; bounded by the stream indexes
        elif fate is WhileHeld.REFUSE:
            if op != "get":  # a get opens no stream of the browser's: nothing to acknowledge
                stream = args[1] if op == "put" else args[0]
                await self.send(text_data=encode_utf16("ack", stream, _HELD_MESSAGE,
                                                       Status.CLIENT_UNAUTHORIZED))
                self.refused_in.add(stream)
            if op in _HELD_KINDS:
                kind, direction, name_at = _HELD_KINDS[op]
                await self._audit(f"desktop.{kind}", "held", {
                    "direction": direction, "name": args[name_at] if name_at is not None else ""})
        elif fate is WhileHeld.ABORT:
            stream = args[0]
            if stream in self.refused_in:
                if op == "end":
                    self.refused_in.discard(stream)
            elif (transfer := self.transfers_in.pop(stream, None)) is not None:
                # Cut off mid-stream: guacd keeps what came before the hold and gets no more.
                self.refused_in.add(stream)
                if op == "end":
                    self.refused_in.discard(stream)
                else:
                    await self.send(text_data=encode_utf16("ack", stream, _HELD_MESSAGE,
                                                           Status.CLIENT_UNAUTHORIZED))
                await self._audit_transfer(transfer, "held")

    def _release_deferred(self) -> None:
        """After a fresh code: the acks held back go to guacd, so its downloads resume."""
        acks, self.deferred_acks = self.deferred_acks, {}
        if acks and self.guacd is not None and not self.ended:
            self.guacd.queue_text("".join(ins.encode() for ins in acks.values()))
            self._flush_input()

    async def _from_watcher(self, ins: Instruction) -> bool:
        """A watcher's browser: flow control goes on to guacd; input is dropped and audited."""
        op = ins.opcode
        if op in _WATCHER_MAY_SEND:
            return True
        if op == "disconnect":
            await self._end(EndReason.CLOSED, "You closed the view.", by=self.user.get_username())
            return False
        self.refused_input += 1
        if op in STREAM_OPCODES:
            stream = ins.args[1] if op == "put" else ins.args[0]
            await self.send(text_data=encode_utf16("ack", stream, "This is a read-only view.",
                                             Status.CLIENT_FORBIDDEN))
        if op not in self.refused_opcodes:  # once per kind: mouse moves would drown the trail
            self.refused_opcodes.add(op)
            await self._audit("desktop.watch.input", "refused", {"watch": str(self.watch.pk), "opcode": op})
        return False

    async def _open_in(self, stream: str, kind: str, direction: str, name: str) -> bool:
        if await self._control_allowed(kind, detail={"direction": direction, "name": name}):
            self.transfers_in[stream] = _Transfer(kind, direction, name)
            return True
        refusal = f"{_CONTROL_WORDS[kind]} is not allowed on this tier."
        await self.send(text_data=encode_utf16("ack", stream, refusal, Status.CLIENT_FORBIDDEN))
        self.refused_in.add(stream)
        return False

    async def _control_allowed(self, kind: str, *, detail: dict[str, Any]) -> bool:
        """The tier's setting for clipboard/file ``kind``: deny, allow, or allow after step-up."""
        self._flush_input()  # input queued before this must not wait on the decision
        control = self.obligations.get(_CONTROLS[kind], "deny")
        allowed = control == "allow"
        if control == "step_up":
            decision = await database_sync_to_async(self._decide_control)(kind)
            allowed = decision is not None and decision.allowed
            if not allowed:
                await self._notice("step_up_for_control", control=kind,
                                   message=f"{_CONTROL_WORDS[kind]} needs a fresh code. "
                                           "Enter one, then try again.")
        if not allowed:
            await self._audit(f"desktop.{kind}", "denied", {**detail, "control": control})
        return allowed

    def _decide_control(self, kind: str) -> Any:
        from streaming.desktop.access import decide_control

        user = self._fresh_user()
        _key, session = current_session(user, self.session_key, self.sign_in)
        return decide_control(user, session, self.client_address, self.stream.resource_id, kind)

    def _fresh_user(self) -> Any:
        return type(self.user).objects.get(pk=self.user.pk)

    # -- guacd -> browser ----------------------------------------------------------------

    async def _pump(self) -> None:
        assert self.guacd is not None
        try:
            while (text := await self.guacd.read_frames()) is not None:
                if self.transfers_out or self.refused_out or any(m in text for m in _GUACD_MARKERS):
                    text = await self._from_guacd(text)
                else:
                    text = to_browser_counting(text)  # guacd counts code points, the browser UTF-16
                if text:
                    await self.send(text_data=text)
                if self.guacd_error:
                    message, status = self.guacd_error_detail
                    log.warning("desktop.guacd_reported_error", session=str(getattr(self.stream, "pk", "")),
                                guacd_message=message, status=status)
                    break
        except ProtocolError as exc:
            log.warning("desktop.guacd_protocol_error", session=str(self.stream.pk), error=str(exc))
            await self._end(EndReason.GUACD_ERROR, "The desktop service sent data the portal could not read.",
                            by="portal")
            return
        except (ConnectionError, OSError):
            pass
        reason, message = self.guacd_error or (EndReason.TARGET_CLOSED, "The desktop ended the connection.")
        await self._end(reason, message, by="target")

    async def _from_guacd(self, text: str) -> str:
        """The slow path, for runs that carry clipboard, file or error instructions."""
        reader = InstructionReader(GUACD_LIMITS)
        reader.feed_text(text)
        kept: list[str] = []
        while (ins := reader.pop()) is not None:
            op, args = ins.opcode, ins.args
            keep = True
            if op == "error":
                # Terminal in the Guacamole protocol: the pump ends the session after this run.
                self.guacd_error = describe_guacd_error(args)
                self.guacd_error_detail = (args[0][:200] if args else "", args[1] if len(args) > 1 else "")
                keep = False  # the session's own end message carries it, once
            elif op in ("clipboard", "file") and args:
                kind = "clipboard.out" if op == "clipboard" else "file.transfer"
                name = args[2] if op == "file" and len(args) > 2 else ""
                direction = "out" if op == "clipboard" else "download"
                if await self._control_allowed(kind, detail={"direction": direction, "name": name}):
                    self.transfers_out[args[0]] = _Transfer(kind, direction, name)
                else:
                    self.refused_out.add(args[0])
                    keep = False
            elif op in ("blob", "end") and args:
                stream = args[0]
                if stream in self.refused_out:
                    keep = False
                    if op == "end":
                        self.refused_out.discard(stream)
                elif (transfer := self.transfers_out.get(stream)) is not None:
                    if op == "blob" and len(args) > 1:
                        size, raw = _blob_size(args[1])
                        transfer.size += size
                        transfer.digest.update(raw)
                    elif op == "end":
                        del self.transfers_out[stream]
                        await self._audit_transfer(transfer, "allowed")
            if keep:
                kept.append(ins.encode_utf16())
        return "".join(kept)

    # -- continuous authorization, idle, maximum duration ---------------------------------

    def _max_seconds(self) -> int:
        return int(self.obligations.get("session_max_seconds") or 8 * 3600)

    def _idle_seconds(self) -> int:
        return int(self.obligations.get("idle_seconds") or 30 * 60)

    def _watermark(self) -> str:
        if not self.obligations.get("watermark"):
            return ""
        return f"{self.user.get_username()} · {self.client_address}"

    async def _watch(self) -> None:
        interval = min(int(self.obligations.get("reauth_interval_seconds") or 30),
                       settings.PORTAL_DESKTOP_REAUTH_MAX_SECONDS)
        next_check = time.monotonic() + interval
        warn = settings.PORTAL_DESKTOP_WARN_SECONDS
        while not self.ended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=0.5)
            pushed = self.wake.is_set()
            self.wake.clear()
            now = time.monotonic()
            if pushed or now >= next_check:
                next_check = now + interval
                await self._recheck()
                if self.ended:
                    return
            left = self.started + self._max_seconds() - now
            # A watcher sends no input by design: idleness is the watched user's, not theirs.
            idle_left = self.last_input + self._idle_seconds() - now if self.watch is None else float("inf")
            if left <= 0:
                await self._end(EndReason.MAX_DURATION, "The session reached the longest time this tier "
                                "allows. Open the desktop again to go on.", by="portal")
            elif idle_left <= 0:
                await self._end(EndReason.IDLE, "The session was idle for too long and was closed.",
                                by="portal")
            elif self.held_until is not None and now >= self.held_until:
                await self._end(EndReason.STEP_UP_TIMEOUT, "No fresh code was entered in time, "
                                "so the session was closed.", by="portal")
            elif left <= warn and "max" not in self.warned:
                self.warned.add("max")
                await self._notice("warning", message=f"This session ends in {int(left)} seconds "
                                   "(the tier's maximum duration).")
            elif idle_left <= warn and "idle" not in self.warned:
                self.warned.add("idle")
                await self._notice("warning", message=f"No input for a while: the session closes in "
                                   f"{int(idle_left)} seconds unless you use it.")
            elif idle_left > warn:
                self.warned.discard("idle")

    async def _recheck(self) -> None:
        if self.watch is not None:
            verdict = await database_sync_to_async(reauthorize_watcher)(self.user.pk, self.session_key,
                                                                        self.stream.pk, self.sign_in)
            self.session_key = verdict.session_key or self.session_key
            if verdict.outcome == "end":
                await self._end(verdict.reason, verdict.message, by=self.pushed_by or "portal")
            self.pushed_by = ""
            return
        verdict: Verdict = await database_sync_to_async(reauthorize)(
            self.user.pk, self.session_key, self.client_address, self.stream.resource_id, self.obligations,
            self.sign_in)
        self.session_key = verdict.session_key or self.session_key
        if verdict.outcome == "end":
            await self._end(verdict.reason, verdict.message, by=self.pushed_by or "portal")
        elif verdict.outcome == "step_up":
            if self.held_until is None:
                grace = settings.PORTAL_DESKTOP_STEP_UP_GRACE_SECONDS
                self.held_until = time.monotonic() + grace
                await self._audit("desktop.hold", "step_up", {"message": verdict.message})
                await self._notice("step_up", message=verdict.message, grace_seconds=grace)
        elif self.held_until is not None:
            self.held_until = None
            self.last_input = time.monotonic()
            await self._audit("desktop.hold", "released", {})
            self._release_deferred()
            await self._notice("resumed", message="Code accepted: the session goes on.")
        if verdict.obligations:
            self.obligations.update(verdict.obligations)
        self.pushed_by = ""

    # -- pushed events (channel layer) ---------------------------------------------------

    async def desktop_recheck(self, event: dict[str, Any]) -> None:
        """Something this session depends on changed: decide again now."""
        # Several pushes may arrive before the re-check runs: keep the one that names a person.
        self.pushed_by = str(event.get("by", ""))[:150] or self.pushed_by
        self.wake.set()

    async def desktop_kill(self, event: dict[str, Any]) -> None:
        by = str(event.get("by", "an administrator"))[:150]
        await self._end(EndReason.KILLED, f"An administrator ({by}) ended this session.", by=by)

    async def desktop_watched_ended(self, event: dict[str, Any]) -> None:
        """The session this admin watches ended (lock, kill, sign-out...): the view ends too."""
        if self.watch is None:
            return  # the session's own consumer: it ended it
        message = str(event.get("message", ""))[:300]
        await self._end(EndReason.TARGET_CLOSED, f"The session you were watching ended: {message}",
                        by=str(event.get("by", "portal"))[:150] or "portal")

    async def desktop_stepped_up(self, event: dict[str, Any]) -> None:
        """The user entered a fresh code on the desktop page (which rotated the session key)."""
        if event.get("user_id") == self.user.pk and event.get("session_key"):
            self.session_key = event["session_key"]
            self.wake.set()

    # -- the end -------------------------------------------------------------------------

    async def disconnect(self, code: int) -> None:
        if self.stream is not None and not self.ended:
            await self._end(EndReason.CLOSED, "The browser closed the desktop.",
                            by=self.user.get_username(), notify=False)
        await self._leave()

    async def _end(self, reason: EndReason, message: str, *, by: str, notify: bool = True) -> None:
        if self.ended:
            return
        self.ended = True
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        status = _END_STATUS.get(reason, Status.SESSION_CLOSED)
        if notify:
            with contextlib.suppress(Exception):
                await self._notice("ended", reason=str(reason), message=message)
                await self.send(text_data=encode_utf16("error", message, status))
        if self.guacd is not None:
            await self.guacd.close()
        try:
            if self.watch is not None:
                await database_sync_to_async(broker.end_watch)(
                    self.watch.pk, message, ended_by=by, refused_input=self.refused_input,
                    bytes_to_browser=self.guacd.bytes_in if self.guacd else 0)
            elif self.stream is not None:
                # Written before the socket closes: whoever sees the close can rely on the record.
                await database_sync_to_async(broker.end_session)(
                    self.stream.pk, reason, message, ended_by=by,
                    bytes_to_browser=self.guacd.bytes_in if self.guacd else 0,
                    bytes_from_browser=self.guacd.bytes_out if self.guacd else 0)
        finally:
            if notify:
                with contextlib.suppress(Exception):
                    await self.close(code=1000, reason=str(status))
            await self._leave()

    async def _leave(self) -> None:
        while self.joined:
            await self.channel_layer.group_discard(self.joined.pop(), self.channel_name)

    # -- helpers -------------------------------------------------------------------------

    async def _notice(self, kind: str, **values: Any) -> None:
        """A portal instruction for the page's status bar; guacamole-common-js ignores it."""
        await self.send(text_data=encode_utf16("portal", kind, json.dumps(values)))

    async def _audit(self, action: str, outcome: str, detail: dict[str, Any]) -> None:
        self._flush_input()  # nor on the audit trail's write
        await database_sync_to_async(record)(
            action, outcome=outcome, actor=self.user.get_username(), resource=self.stream.resource.slug,
            client_address=self.client_address, detail={"session": str(self.stream.pk), **detail})

    async def _audit_transfer(self, transfer: _Transfer, outcome: str) -> None:
        detail: dict[str, Any] = {"direction": transfer.direction, "size": transfer.size}
        if transfer.kind == "file.transfer":
            detail.update(name=transfer.name, sha256=transfer.digest.hexdigest())
        await self._audit(f"desktop.{transfer.kind}", outcome, detail)
