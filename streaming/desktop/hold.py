"""What each browser instruction may do while the session's input is held for a fresh code.

A hold (the tier's freshness ran out mid-session) must stop everything the browser sends
towards the target, not only keys and the mouse: a paste or an upload is data too. Pure, so
the rule is read and table-tested in one place; the relay only carries it out.
"""

from __future__ import annotations

import enum

__all__ = ["WhileHeld", "while_held"]


class WhileHeld(enum.Enum):
    """The fate of one browser instruction during a hold."""

    FORWARD = "forward"  # keeps the session alive (frame acks, screen size) or ends it
    DROP = "drop"  # input typed blind: never replayed after the hold
    REFUSE = "refuse"  # opens a stream (paste, upload, download): refused, audited as held
    ABORT = "abort"  # data of a stream: an open upload or paste is cut off, audited as held
    DEFER = "defer"  # acknowledges guacd's stream: passed on once a code is entered


_RULES = {
    "key": WhileHeld.DROP, "mouse": WhileHeld.DROP, "touch": WhileHeld.DROP,
    "sync": WhileHeld.FORWARD, "nop": WhileHeld.FORWARD, "size": WhileHeld.FORWARD,
    "disconnect": WhileHeld.FORWARD,
    "clipboard": WhileHeld.REFUSE, "file": WhileHeld.REFUSE, "put": WhileHeld.REFUSE,
    "get": WhileHeld.REFUSE, "pipe": WhileHeld.REFUSE, "argv": WhileHeld.REFUSE, "audio": WhileHeld.REFUSE,
    "blob": WhileHeld.ABORT, "end": WhileHeld.ABORT,
    "ack": WhileHeld.DEFER,
}


def while_held(opcode: str) -> WhileHeld:
    """The fate of ``opcode`` from the browser during a hold; anything unknown is dropped."""
    return _RULES.get(opcode, WhileHeld.DROP)
