"""The Guacamole wire format: a pure, incremental, bounded instruction reader and an encoder.

An instruction is ``LENGTH.VALUE,LENGTH.VALUE,...;`` where each LENGTH counts Unicode
characters, not bytes: code points for guacd, but UTF-16 code units for guacamole-common-js
1.5.0 (JavaScript's ``String.length``), which differ for every character outside the Basic
Multilingual Plane (an emoji counts 2 in the browser, 1 in guacd). Each peer is read in its
own counting (:attr:`Limits.utf16_lengths`), and the relay writes each peer's counting
(:func:`encode` for guacd, :func:`encode_utf16` and :func:`to_browser_counting` for the
browser). Each parsed instruction keeps the raw slice it arrived as, so the relay forwards
what it allows as it came (:meth:`Instruction.for_guacd`, :meth:`Instruction.for_browser`)
and re-encodes only an instruction whose counting must change. A TCP read from guacd can
end anywhere, even inside a
multi-byte UTF-8 character, so bytes are decoded incrementally and instruction boundaries
are found by walking the length prefixes, never by searching for ``;`` (which may appear
inside a value). Every limit is hard: a peer that exceeds one gets :class:`ProtocolError`,
never an unbounded buffer. No I/O here; the relay and the handshake feed this class.
"""

from __future__ import annotations

import codecs
import re
from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "BROWSER_LIMITS",
    "GUACD_LIMITS",
    "Instruction",
    "InstructionReader",
    "Limits",
    "ProtocolError",
    "Status",
    "encode",
    "encode_utf16",
    "to_browser_counting",
]


class ProtocolError(ValueError):
    """The peer sent something that is not a well-formed, within-limits instruction stream."""


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


@dataclass(frozen=True)
class Limits:
    """Hard bounds on one instruction (characters) and on its number of elements."""

    max_instruction_length: int
    max_elements: int
    max_length_digits: int = 6
    utf16_lengths: bool = False  # the peer counts UTF-16 code units (a browser), not code points


# guacd itself refuses instructions over 8192 characters or 128 elements (guac_parser);
# some headroom for its images, none for the browser, whose instructions are small.
GUACD_LIMITS = Limits(max_instruction_length=64 * 1024, max_elements=256)
BROWSER_LIMITS = Limits(max_instruction_length=16 * 1024, max_elements=16, max_length_digits=5,
                        utf16_lengths=True)
# Characters outside the Basic Multilingual Plane: one code point, two UTF-16 code units.
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


@dataclass(frozen=True, slots=True)
class Instruction:
    """One parsed instruction: an opcode (empty for tunnel-internal ones), its arguments and
    the wire text it was read from (empty when it was built, not read)."""

    opcode: str
    args: tuple[str, ...] = ()
    raw: str = field(default="", compare=False, repr=False)

    def encode(self) -> str:
        """For guacd: lengths in code points."""
        return encode(self.opcode, *self.args)

    def encode_utf16(self) -> str:
        """For the browser: lengths in UTF-16 code units."""
        return encode_utf16(self.opcode, *self.args)

    def for_guacd(self) -> str:
        """The wire text for guacd: the raw slice unless its counting differs (astral characters)."""
        raw = self.raw
        return raw if raw and _same_counting(raw) else self.encode()

    def for_browser(self) -> str:
        """The wire text for the browser: the raw slice unless its counting differs."""
        raw = self.raw
        return raw if raw and _same_counting(raw) else self.encode_utf16()


def _same_counting(text: str) -> bool:
    """True when code points and UTF-16 code units count ``text`` alike (nothing outside the BMP)."""
    return text.isascii() or not _ASTRAL.search(text)


def encode(opcode: str, *args: object) -> str:
    """The wire form of one instruction for guacd; values are stringified, lengths count code points."""
    parts = [opcode, *(str(a) for a in args)]
    return ",".join(f"{len(p)}.{p}" for p in parts) + ";"


def encode_utf16(opcode: str, *args: object) -> str:
    """The wire form of one instruction for guacamole-common-js: lengths count UTF-16 code units."""
    parts = [opcode, *(str(a) for a in args)]
    return ",".join(f"{_utf16_length(p)}.{p}" for p in parts) + ";"


def _utf16_length(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text) + len(_ASTRAL.findall(text))


def to_browser_counting(text: str) -> str:
    """Whole instructions from guacd (code points) rewritten for the browser (UTF-16 units).

    Unchanged, and no parse, unless ``text`` holds a character outside the BMP: guacd's
    image data is base64, so the hot path costs one flag check; otherwise only the
    instructions that hold such a character are re-encoded.
    """
    if _same_counting(text):
        return text
    reader = InstructionReader(GUACD_LIMITS)
    reader.feed_text(text)
    if reader.pending:
        raise ProtocolError("a run from guacd ends inside an instruction")
    out: list[str] = []
    while (instruction := reader.pop()) is not None:
        out.append(instruction.for_browser())  # only instructions with astral characters change
    return "".join(out)


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
            if dot + 1 + length - open_start >= limits.max_instruction_length:
                raise ProtocolError(
                    f"an instruction is longer than {limits.max_instruction_length} characters"
                )
            end = _value_end(buf, dot + 1, length, limits.utf16_lengths)
            if end is None or end >= size:
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
        instruction = _parse_one(self._buffer, self._start, end, self.limits.utf16_lengths)
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


def _value_end(buf: str, start: int, length: int, utf16: bool) -> int | None:
    """Index just past a value of ``length`` (code points, or UTF-16 units when ``utf16``)
    that starts at ``start``; None when the buffer ends first."""
    end = start + length
    if not utf16:
        return end if end <= len(buf) else None
    chunk = buf[start:end]
    if chunk.isascii() or not _ASTRAL.search(chunk):  # every character is one unit
        return end if len(chunk) == length else None
    pos, left, size = start, length, len(buf)
    while left > 0:
        if pos >= size:
            return None
        left -= 2 if buf[pos] > "\uffff" else 1
        pos += 1
    if left < 0:
        raise ProtocolError("an element length ends inside a character")
    return pos


def _parse_one(buf: str, start: int, end: int, utf16: bool = False) -> Instruction:
    elements: list[str] = []
    pos = start
    while pos < end:
        dot = buf.index(".", pos)
        length = int(buf[pos:dot])
        value_end = _value_end(buf, dot + 1, length, utf16)
        assert value_end is not None  # the boundaries were found before
        elements.append(buf[dot + 1:value_end])
        pos = value_end + 1
    return Instruction(elements[0], tuple(elements[1:]), buf[start:end])
