"""What a browser may say on the tunnel once the relay has done the handshake.

The browser is untrusted: it gets no say in the handshake (``select``, ``connect`` and the
rest are the relay's), and every instruction it sends after that must be one of the
client-to-server instructions of protocol 1.3 with the right number of well-formed
arguments. Anything else is a :class:`ProtocolError` and ends the session.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from streaming.desktop.guacamole.protocol import Instruction, ProtocolError

__all__ = ["FILE_OPCODES", "INPUT_OPCODES", "STREAM_OPCODES", "check_browser_instruction"]

_INT = re.compile(r"-?[0-9]{1,16}")
_MIMETYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}(;[ -~]{0,128})?")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

# Largest blob guacamole-common-js sends: 6048 bytes, base64-encoded.
MAX_BLOB_CHARS = 8192
MAX_NAME_CHARS = 1024
MAX_STREAM_INDEX = 1024
MAX_SCREEN = 8192


def _int(lo: int, hi: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        return bool(_INT.fullmatch(value)) and lo <= int(value) <= hi
    return check


def _text(limit: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        return len(value) <= limit and "\x00" not in value
    return check


def _mimetype(value: str) -> bool:
    return bool(_MIMETYPE.fullmatch(value))


def _base64(value: str) -> bool:
    return len(value) <= MAX_BLOB_CHARS and bool(_BASE64.fullmatch(value))


_STREAM = _int(0, MAX_STREAM_INDEX)
_COORD = _int(-MAX_SCREEN, 2 * MAX_SCREEN)
_TIMESTAMP = _int(0, 2**53)
_STATUS = _int(0, 0xFFFF)

# opcode -> (checks for the required arguments, checks for optional trailing arguments)
_RULES: dict[str, tuple[tuple[Callable[[str], bool], ...], tuple[Callable[[str], bool], ...]]] = {
    "key": ((_int(0, 0x10FFFF + 0x01000000), _int(0, 1)), ()),
    "mouse": ((_COORD, _COORD, _int(0, 0x1F)), ()),
    "touch": ((_int(0, 64), _COORD, _COORD, _int(0, MAX_SCREEN), _int(0, MAX_SCREEN),
               _text(32), _text(32)), ()),
    "size": ((_int(1, MAX_SCREEN), _int(1, MAX_SCREEN)), (_int(1, 1000),)),
    "sync": ((_TIMESTAMP,), (_int(0, 2**31),)),
    "nop": ((), ()),
    "disconnect": ((), ()),
    "ack": ((_STREAM, _text(MAX_NAME_CHARS), _STATUS), ()),
    "blob": ((_STREAM, _base64), ()),
    "end": ((_STREAM,), ()),
    "clipboard": ((_STREAM, _mimetype), ()),
    "file": ((_STREAM, _mimetype, _text(MAX_NAME_CHARS)), ()),
    "pipe": ((_STREAM, _mimetype, _text(MAX_NAME_CHARS)), ()),
    "put": ((_STREAM, _STREAM, _mimetype, _text(MAX_NAME_CHARS)), ()),
    "get": ((_STREAM, _text(MAX_NAME_CHARS)), ()),
    "argv": ((_STREAM, _mimetype, _text(MAX_NAME_CHARS)), ()),
    "audio": ((_STREAM, _mimetype), ()),
}
# Tunnel-internal instructions (empty opcode) the relay answers itself.
_INTERNAL = {"ping": ((_TIMESTAMP,), ())}

INPUT_OPCODES = frozenset({"key", "mouse", "touch"})
STREAM_OPCODES = frozenset({"clipboard", "file", "pipe", "put", "argv", "audio"})
FILE_OPCODES = frozenset({"file", "put", "get"})


def check_browser_instruction(instruction: Instruction) -> None:
    """Raise :class:`ProtocolError` unless ``instruction`` is one a browser may send."""
    if instruction.opcode == "":
        if not instruction.args:
            raise ProtocolError("an internal instruction without a name")
        name, args = instruction.args[0], instruction.args[1:]
        rule = _INTERNAL.get(name)
        label = f"internal instruction {name[:32]!r}"
    else:
        args = instruction.args
        rule = _RULES.get(instruction.opcode)
        label = f"instruction {instruction.opcode[:32]!r}"
    if rule is None:
        raise ProtocolError(f"{label} is not allowed from the browser")
    required, optional = rule
    if not len(required) <= len(args) <= len(required) + len(optional):
        raise ProtocolError(f"{label} has {len(args)} arguments")
    for check, value in zip((*required, *optional), args, strict=False):
        if not check(value):
            raise ProtocolError(f"{label} has a malformed argument")
