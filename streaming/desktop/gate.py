"""What each instruction on a desktop tunnel may do under the session's obligations.

Pure: no I/O, no clock, no Channels. The relay hands the gate every browser instruction and
every guacd instruction it has to look at, and carries out the :class:`Step` it gets back
(forward the instruction as it arrived, answer the browser, write audits, end the session).
A clipboard or file control set to ``step_up`` needs the live decision, which reads the
database: the gate then answers with an :class:`Ask`, and the relay brings the decision back
through :meth:`Gate.answer`. The owner of a session and an admin watching it read-only are
two strategies (:class:`OwnerGate`, :class:`WatcherGate`) over the same stream bookkeeping:
what guacd sends is judged alike for both, what their browsers may send is not.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streaming.desktop.guacamole.browser import INPUT_OPCODES, STREAM_OPCODES
from streaming.desktop.guacamole.protocol import Instruction, Status, encode_utf16
from streaming.desktop.hold import WhileHeld, while_held
from streaming.desktop.models import EndReason

__all__ = [
    "DROP",
    "FORWARD",
    "INPUT",
    "WATCHER_OBLIGATIONS",
    "Ask",
    "Audit",
    "By",
    "Ending",
    "Gate",
    "Notice",
    "OwnerGate",
    "Step",
    "Transfer",
    "WatcherGate",
    "describe_guacd_error",
    "end_status",
]


class By(enum.Enum):
    """Who ends a session, as the session's record names them."""

    USER = "user"  # the person at this browser
    PORTAL = "portal"
    TARGET = "target"


@dataclass(frozen=True, slots=True)
class Ending:
    """The session ends: why, the sentence the person reads, who ended it, what to log."""

    reason: EndReason
    message: str
    by: By = By.PORTAL
    log: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Audit:
    """One audit event to write (the relay adds the session, actor and resource)."""

    action: str
    outcome: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Notice:
    """A portal instruction for the page's status bar."""

    kind: str
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Ask:
    """A control set to ``step_up``: the live decision must say whether ``instruction`` may open."""

    kind: str
    instruction: Instruction
    from_guacd: bool


@dataclass(frozen=True, slots=True)
class Step:
    """What the relay does with one instruction; effects are carried out in field order."""

    forward: bool = False  # pass the instruction on as it arrived
    input: bool = False  # the person used the desktop (the idle clock restarts)
    audits: tuple[Audit, ...] = ()
    to_guacd: str = ""  # wire text for guacd besides the instruction (acks held back)
    notices: tuple[Notice, ...] = ()
    replies: tuple[str, ...] = ()  # wire text for the browser
    ask: Ask | None = None
    end: Ending | None = None


FORWARD = Step(forward=True)
INPUT = Step(forward=True, input=True)
DROP = Step()

# guacd's ``error`` is terminal; what its statuses mean to the person in front of the page.
# guacd's own text is for logs ("Aborted. See logs."); it is kept in the log, not shown.
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


def describe_guacd_error(args: list[str] | tuple[str, ...]) -> tuple[EndReason, str]:
    """Why the session ended, and a sentence, for guacd's ``error`` instruction (message, status)."""
    try:
        status = int(args[1]) if len(args) > 1 else 0
    except ValueError:
        status = 0
    return _GUACD_ERRORS.get(status, (EndReason.TARGET_CLOSED,
                                      "The desktop service reported an error and ended the session."))


def end_status(reason: EndReason) -> int:
    """The Guacamole status the browser's closing ``error`` carries for ``reason``."""
    return _END_STATUS.get(reason, Status.SESSION_CLOSED)


# Substrings that mark a run from guacd as worth parsing; base64 never contains "." or ",",
# so image data cannot fake them, and a false positive only costs a parse.
_GUACD_MARKERS = ("9.clipboard,", "4.file,", "5.error,")
_CONTROLS = {"clipboard.in": "clipboard_in", "clipboard.out": "clipboard_out",
             "file.transfer": "file_transfer"}
_CONTROL_WORDS = {"clipboard.in": "Pasting into this desktop", "clipboard.out": "Copying out of this desktop",
                  "file.transfer": "File transfer"}
_HELD_MESSAGE = "Paused until a fresh code is entered. Try again after entering it."
# opcode -> (control, direction, index of the name argument) for a stream refused during a hold
_HELD_KINDS = {"clipboard": ("clipboard.in", "in", None), "file": ("file.transfer", "upload", 2),
               "put": ("file.transfer", "upload", 3), "get": ("file.transfer", "download", 1)}
# What a watcher's browser may send: flow control only. Everything else is input and is dropped.
_WATCHER_MAY_SEND = frozenset({"sync", "nop", "ack"})
WATCHER_OBLIGATIONS = {"clipboard_in": "deny", "clipboard_out": "deny", "file_transfer": "deny",
                       "read_only": True}


@dataclass
class Transfer:
    """A clipboard or file stream the relay watches: its size and hash go to the audit trail."""

    kind: str
    direction: str
    name: str = ""
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, blob: str) -> None:
        """Count one base64 ``blob`` of the stream (undecodable data counts nothing)."""
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error:
            raw = b""
        self.size += len(raw)
        self.digest.update(raw)

    def audit(self, outcome: str) -> Audit:
        """The stream's audit event: direction and size, and for a file its name and SHA-256."""
        detail: dict[str, Any] = {"direction": self.direction, "size": self.size}
        if self.kind == "file.transfer":
            detail.update(name=self.name, sha256=self.digest.hexdigest())
        return Audit(f"desktop.{self.kind}", outcome, detail)


@dataclass(frozen=True, slots=True)
class _Opening:
    """A stream an instruction opens: which control rules it, and the stream to track (if any)."""

    kind: str
    direction: str
    stream: str | None
    name: str


def _ack(stream: str, message: str, status: int) -> str:
    return encode_utf16("ack", stream, message, status)


def _opening(ins: Instruction, from_guacd: bool) -> _Opening | None:
    op, args = ins.opcode, ins.args
    if from_guacd:
        if op == "clipboard" and args:
            return _Opening("clipboard.out", "out", args[0], "")
        if op == "file" and args:
            return _Opening("file.transfer", "download", args[0], args[2] if len(args) > 2 else "")
        return None
    if op == "clipboard":
        return _Opening("clipboard.in", "in", args[0], "")
    if op == "file":
        return _Opening("file.transfer", "upload", args[0], args[2])
    if op == "put":
        return _Opening("file.transfer", "upload", args[1], args[3])
    if op == "get":  # opens none of the browser's streams: nothing to track or acknowledge
        return _Opening("file.transfer", "download", None, args[1])
    return None


class Gate:
    """The stream bookkeeping and guacd's side, shared by both strategies."""

    def __init__(self, obligations: Mapping[str, Any]) -> None:
        self.obligations: dict[str, Any] = dict(obligations)
        self.transfers_in: dict[str, Transfer] = {}
        self.transfers_out: dict[str, Transfer] = {}
        self.refused_in: set[str] = set()
        self.refused_out: set[str] = set()

    def from_browser(self, ins: Instruction) -> Step:
        """What one browser instruction (already checked well-formed) may do."""
        raise NotImplementedError

    def watches_guacd(self, text: str) -> bool:
        """Whether a run of guacd's instructions must be read one by one (else it passes as is)."""
        return bool(self.transfers_out or self.refused_out) or any(m in text for m in _GUACD_MARKERS)

    def from_guacd(self, ins: Instruction) -> Step:
        """What one guacd instruction may do: errors end the session, streams out obey controls."""
        op, args = ins.opcode, ins.args
        if op == "error":
            reason, message = describe_guacd_error(args)
            said = {"guacd_message": args[0][:200] if args else "",
                    "status": args[1] if len(args) > 1 else ""}
            return Step(end=Ending(reason, message, By.TARGET, said))  # the end message carries it, once
        if (opening := _opening(ins, from_guacd=True)) is not None:
            return self._open(ins, opening, decided=None, from_guacd=True)
        if op in ("blob", "end") and args:
            return self._stream_data(ins, self.transfers_out, self.refused_out)
        return FORWARD

    def answer(self, ask: Ask, allowed: bool) -> Step:
        """The live decision on ``ask`` came back: what the instruction that asked may do now."""
        opening = _opening(ask.instruction, ask.from_guacd)
        assert opening is not None
        return self._open(ask.instruction, opening, decided=allowed, from_guacd=ask.from_guacd)

    def _open(self, ins: Instruction, opening: _Opening, *, decided: bool | None, from_guacd: bool) -> Step:
        """The tier's setting for the stream's control: deny, allow, or allow after step-up."""
        kind = opening.kind
        control = self.obligations.get(_CONTROLS[kind], "deny")
        if control == "step_up" and decided is None:
            return Step(ask=Ask(kind, ins, from_guacd))
        if control == "allow" or (control == "step_up" and decided):
            if opening.stream is not None:
                transfers = self.transfers_out if from_guacd else self.transfers_in
                transfers[opening.stream] = Transfer(kind, opening.direction, opening.name)
            return FORWARD
        audit = Audit(f"desktop.{kind}", "denied",
                      {"direction": opening.direction, "name": opening.name, "control": control})
        asking = f"{_CONTROL_WORDS[kind]} needs a fresh code. Enter one, then try again."
        notices = ((Notice("step_up_for_control", {"control": kind, "message": asking}),)
                   if control == "step_up" else ())
        replies: tuple[str, ...] = ()
        if opening.stream is not None and from_guacd:
            self.refused_out.add(opening.stream)
        elif opening.stream is not None:
            self.refused_in.add(opening.stream)
            replies = (_ack(opening.stream, f"{_CONTROL_WORDS[kind]} is not allowed on this tier.",
                            Status.CLIENT_FORBIDDEN),)
        return Step(audits=(audit,), notices=notices, replies=replies)

    @staticmethod
    def _stream_data(ins: Instruction, transfers: dict[str, Transfer], refused: set[str]) -> Step:
        """A ``blob`` or ``end``: a refused stream's data stops here, a watched one is counted."""
        stream = ins.args[0]
        if stream in refused:
            if ins.opcode == "end":
                refused.discard(stream)
            return DROP
        transfer = transfers.get(stream)
        if transfer is None:
            return FORWARD
        if ins.opcode == "blob":
            if len(ins.args) > 1:
                transfer.add(ins.args[1])
            return FORWARD
        del transfers[stream]
        return Step(forward=True, audits=(transfer.audit("allowed"),))


def _internal(ins: Instruction) -> Step:
    """The browser's tunnel-internal ``ping``: the relay answers it, guacd never sees it."""
    return Step(replies=(ins.for_browser(),))


class OwnerGate(Gate):
    """The session's own user: input flows unless held for a fresh code; streams obey the tier."""

    def __init__(self, obligations: Mapping[str, Any]) -> None:
        super().__init__(obligations)
        self.held = False
        self.deferred_acks: dict[str, Instruction] = {}

    def hold(self, message: str, grace_seconds: int) -> Step:
        """Input is held from now until :meth:`release` (the tier wants a fresh code): say so."""
        self.held = True
        return Step(audits=(Audit("desktop.hold", "step_up", {"message": message}),),
                    notices=(Notice("step_up", {"message": message, "grace_seconds": grace_seconds}),))

    def release(self) -> Step:
        """A fresh code was entered: input flows again, and the acks held back go to guacd so
        its downloads resume."""
        self.held = False
        acks, self.deferred_acks = self.deferred_acks, {}
        return Step(audits=(Audit("desktop.hold", "released", {}),),
                    to_guacd="".join(ins.for_guacd() for ins in acks.values()),
                    notices=(Notice("resumed", {"message": "Code accepted: the session goes on."}),))

    def from_browser(self, ins: Instruction) -> Step:
        """What one of the owner's browser instructions may do."""
        op = ins.opcode
        if op in INPUT_OPCODES and not self.held:
            return INPUT
        if op == "":
            return _internal(ins)
        if self.held and (fate := while_held(op)) is not WhileHeld.FORWARD:
            return self._while_held(ins, fate)
        if op == "disconnect":
            return Step(end=Ending(EndReason.CLOSED, "You closed the desktop.", By.USER))
        if (opening := _opening(ins, from_guacd=False)) is not None:
            return self._open(ins, opening, decided=None, from_guacd=False)
        if op in ("pipe", "argv", "audio"):
            self.refused_in.add(ins.args[0])
            return Step(replies=(_ack(ins.args[0], "Not allowed on this portal.", Status.CLIENT_FORBIDDEN),))
        if op in ("blob", "end"):
            return self._stream_data(ins, self.transfers_in, self.refused_in)
        return FORWARD

    def _while_held(self, ins: Instruction, fate: WhileHeld) -> Step:
        """Carry out :func:`while_held` for one instruction; nothing here reaches guacd now."""
        op, args = ins.opcode, ins.args
        if fate is WhileHeld.DEFER:
            self.deferred_acks[args[0]] = ins  # the latest per stream; bounded by the stream indexes
            return DROP
        if fate is WhileHeld.REFUSE:
            replies: tuple[str, ...] = ()
            if op != "get":  # a get opens no stream of the browser's: nothing to acknowledge
                stream = args[1] if op == "put" else args[0]
                replies = (_ack(stream, _HELD_MESSAGE, Status.CLIENT_UNAUTHORIZED),)
                self.refused_in.add(stream)
            audits: tuple[Audit, ...] = ()
            if op in _HELD_KINDS:
                kind, direction, name_at = _HELD_KINDS[op]
                audits = (Audit(f"desktop.{kind}", "held", {
                    "direction": direction, "name": args[name_at] if name_at is not None else ""}),)
            return Step(audits=audits, replies=replies)
        if fate is WhileHeld.ABORT:
            stream = args[0]
            if stream in self.refused_in:
                if op == "end":
                    self.refused_in.discard(stream)
            elif (transfer := self.transfers_in.pop(stream, None)) is not None:
                # Cut off mid-stream: guacd keeps what came before the hold and gets no more.
                if op == "end":
                    return Step(audits=(transfer.audit("held"),))
                self.refused_in.add(stream)
                return Step(audits=(transfer.audit("held"),),
                            replies=(_ack(stream, _HELD_MESSAGE, Status.CLIENT_UNAUTHORIZED),))
        return DROP


class WatcherGate(Gate):
    """An admin's read-only view: flow control goes on to guacd; input is dropped and audited."""

    def __init__(self, obligations: Mapping[str, Any], watch_id: str) -> None:
        super().__init__({**obligations, **WATCHER_OBLIGATIONS})
        self.watch_id = watch_id
        self.refused_input = 0
        self.refused_opcodes: set[str] = set()

    def from_browser(self, ins: Instruction) -> Step:
        """What one of the watcher's browser instructions may do."""
        op = ins.opcode
        if op in _WATCHER_MAY_SEND:
            return FORWARD
        if op == "":
            return _internal(ins)
        if op == "disconnect":
            return Step(end=Ending(EndReason.CLOSED, "You closed the view.", By.USER))
        self.refused_input += 1
        replies: tuple[str, ...] = ()
        if op in STREAM_OPCODES:
            stream = ins.args[1] if op == "put" else ins.args[0]
            replies = (_ack(stream, "This is a read-only view.", Status.CLIENT_FORBIDDEN),)
        audits: tuple[Audit, ...] = ()
        if op not in self.refused_opcodes:  # once per kind: mouse moves would drown the trail
            self.refused_opcodes.add(op)
            audits = (Audit("desktop.watch.input", "refused", {"watch": self.watch_id, "opcode": op}),)
        return Step(audits=audits, replies=replies)
