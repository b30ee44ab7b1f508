"""The Guacamole wire format: a pure, incremental, bounded instruction reader and an encoder.

An instruction is ``LENGTH.VALUE,LENGTH.VALUE,...;`` where each LENGTH counts Unicode
characters (code points), not bytes. A TCP read from guacd can end anywhere, even inside a
multi-byte UTF-8 character, so bytes are decoded incrementally and instruction boundaries
are found by walking the length prefixes, never by searching for ``;`` (which may appear
inside a value). Every limit is hard: a peer that exceeds one gets :class:`ProtocolError`,
never an unbounded buffer. No I/O here; the relay and the handshake feed this class.
"""

from __future__ import annotations

import codecs
from collections import deque
from dataclasses import dataclass

__all__ = [
    "BROWSER_LIMITS",
    "GUACD_LIMITS",
    "Instruction",
    "InstructionReader",
    "Limits",
    "ProtocolError",
    "encode",
]


class ProtocolError(ValueError):
    """The peer sent something that is not a well-formed, within-limits instruction stream."""


@dataclass(frozen=True)
class Limits:
    """Hard bounds on one instruction (characters) and on its number of elements."""

    max_instruction_length: int
    max_elements: int
    max_length_digits: int = 6


# guacd itself refuses instructions over 8192 characters or 128 elements (guac_parser);
# some headroom for its images, none for the browser, whose instructions are small.
GUACD_LIMITS = Limits(max_instruction_length=64 * 1024, max_elements=256)
BROWSER_LIMITS = Limits(max_instruction_length=16 * 1024, max_elements=16, max_length_digits=5)


@dataclass(frozen=True, slots=True)
class Instruction:
    """One parsed instruction: an opcode (empty for tunnel-internal ones) and its arguments."""

    opcode: str
    args: tuple[str, ...] = ()

    def encode(self) -> str:
        return encode(self.opcode, *self.args)


def encode(opcode: str, *args: object) -> str:
    """The wire form of one instruction; values are stringified, lengths count characters."""
    parts = [opcode, *(str(a) for a in args)]
    return ",".join(f"{len(p)}.{p}" for p in parts) + ";"


class InstructionReader:
    """Accumulates a stream and hands out whole instructions, parsed or as raw text.

    ``feed`` finds boundaries as data arrives (resuming where the last call stopped, so a
    long stream costs linear time). ``pop`` parses the next whole instruction; ``take_text``
    returns every whole instruction received so far as one string, which is what the relay
    forwards: a WebSocket message must never end inside an instruction.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._buffer = ""
        self._start = 0  # where the first instruction not yet handed out begins
        self._ends: deque[int] = deque()  # end offsets (exclusive) of whole instructions
        self._scan = 0  # where the next length prefix of the open instruction begins
        self._elements = 0  # elements seen in the open instruction

    # -- input -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Add bytes read from the peer (a read may split a UTF-8 character)."""
        try:
            text = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise ProtocolError("the stream is not valid UTF-8") from exc
        self.feed_text(text)

    def feed_text(self, text: str) -> None:
        """Add already decoded text (a WebSocket text message)."""
        if text:
            self._buffer += text
            self._find_boundaries()

    def _find_boundaries(self) -> None:
        buf, limits = self._buffer, self.limits
        size = len(buf)
        scan = self._scan
        open_start = self._ends[-1] if self._ends else self._start
        while True:
            dot = buf.find(".", scan, scan + limits.max_length_digits + 1)
            if dot == -1:
                tail = buf[scan:]
                if len(tail) > limits.max_length_digits or (tail and not _is_digits(tail)):
                    raise ProtocolError("an element length is not a short decimal number")
                break
            prefix = buf[scan:dot]
            if not _is_digits(prefix):
                raise ProtocolError("an element length is not a decimal number")
            length = int(prefix)
            end = dot + 1 + length
            if end - open_start >= limits.max_instruction_length:
                raise ProtocolError(
                    f"an instruction is longer than {limits.max_instruction_length} characters"
                )
            if end >= size:
                break  # the value or its terminator has not arrived yet
            self._elements += 1
            if self._elements > limits.max_elements:
                raise ProtocolError(f"an instruction has more than {limits.max_elements} elements")
            terminator = buf[end]
            scan = end + 1
            if terminator == ";":
                self._ends.append(scan)
                open_start = scan
                self._elements = 0
            elif terminator != ",":
                raise ProtocolError("an element is not followed by ',' or ';'")
        self._scan = scan
        if size - open_start >= limits.max_instruction_length:
            raise ProtocolError(f"an instruction is longer than {limits.max_instruction_length} characters")

    # -- output ------------------------------------------------------------------------

    def pop(self) -> Instruction | None:
        """The next whole instruction, parsed; None when none is complete yet."""
        if not self._ends:
            return None
        end = self._ends.popleft()
        instruction = _parse_one(self._buffer, self._start, end)
        self._start = end
        self._compact()
        return instruction

    def take_text(self) -> str:
        """Every whole instruction not yet handed out, as wire text ('' when none)."""
        if not self._ends:
            return ""
        end = self._ends[-1]
        text = self._buffer[self._start:end]
        self._ends.clear()
        self._start = end
        self._compact()
        return text

    @property
    def pending(self) -> int:
        """Characters held that do not yet form a whole instruction."""
        return len(self._buffer) - (self._ends[-1] if self._ends else self._start)

    def finish(self) -> None:
        """The stream ended: anything half-received is an error, not silently dropped."""
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ProtocolError("the stream ended inside a UTF-8 character") from exc
        if self.pending:
            raise ProtocolError("the stream ended inside an instruction")

    def _compact(self) -> None:
        # Drop handed-out text once it dominates the buffer, keeping the offsets consistent.
        if self._start and self._start * 2 >= len(self._buffer):
            shift = self._start
            self._buffer = self._buffer[shift:]
            self._start = 0
            self._scan -= shift
            self._ends = deque(e - shift for e in self._ends)


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _parse_one(buf: str, start: int, end: int) -> Instruction:
    elements: list[str] = []
    pos = start
    while pos < end:
        dot = buf.index(".", pos)
        length = int(buf[pos:dot])
        value_end = dot + 1 + length
        elements.append(buf[dot + 1:value_end])
        pos = value_end + 1
    return Instruction(elements[0], tuple(elements[1:]))
