"""The supervisor clock of a desktop session: when to decide again, warn, hold and end.

Pure: it is told "now" (``time.monotonic()`` in the relay, any number in tests) and what the
last re-authorization said, and answers what the relay should do; it never sleeps, reads the
database or sends. The periodic re-check is the safety net (revocation is pushed and wakes the
relay at once), so the clock also says when a push makes a re-check due.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from streaming.desktop.models import EndReason

__all__ = ["Call", "HoldChange", "SupervisorClock", "Timing"]

DEFAULT_MAX_SECONDS = 8 * 3600
DEFAULT_IDLE_SECONDS = 30 * 60
DEFAULT_RECHECK_SECONDS = 30


def _max_seconds(obligations: Mapping[str, Any]) -> int:
    return int(obligations.get("session_max_seconds") or DEFAULT_MAX_SECONDS)


def _idle_seconds(obligations: Mapping[str, Any]) -> int:
    return int(obligations.get("idle_seconds") or DEFAULT_IDLE_SECONDS)


@dataclass(frozen=True)
class Timing:
    """The session's time limits, from its obligations and the portal's settings."""

    max_seconds: int = DEFAULT_MAX_SECONDS
    idle_seconds: int = DEFAULT_IDLE_SECONDS
    recheck_seconds: int = DEFAULT_RECHECK_SECONDS
    warn_seconds: int = 60
    grace_seconds: int = 120
    watcher: bool = False  # a watcher sends no input by design: idleness is the watched user's

    @classmethod
    def from_obligations(cls, obligations: Mapping[str, Any], *, recheck_max: int, warn: int, grace: int,
                         watcher: bool = False) -> Timing:
        """The tier's limits (defaults when unset), the re-check no rarer than ``recheck_max``."""
        recheck = min(int(obligations.get("reauth_interval_seconds") or DEFAULT_RECHECK_SECONDS), recheck_max)
        return cls(_max_seconds(obligations), _idle_seconds(obligations), recheck, warn, grace, watcher)


class HoldChange(enum.Enum):
    """What a re-authorization's outcome does to the hold on the session's input."""

    NONE = "none"
    HELD = "held"  # input is held from now, for the grace period, until a fresh code
    RELEASED = "released"  # a fresh code was entered: input flows again


@dataclass(frozen=True)
class Call:
    """Something the relay must do now: end the session (``end`` set) or warn (``end`` None)."""

    message: str
    end: EndReason | None = None


class SupervisorClock:
    """The timers of one session: periodic re-check, idle and maximum-duration, step-up grace."""

    def __init__(self, timing: Timing, now: float) -> None:
        self.timing = timing
        self.started = now
        self.last_input = now
        self.held_until: float | None = None
        self.next_check = now + timing.recheck_seconds
        self.warned: set[str] = set()

    @property
    def held(self) -> bool:
        """Input is held for a fresh code."""
        return self.held_until is not None

    def touch(self, now: float) -> None:
        """The person used the desktop (keys, mouse, touch)."""
        self.last_input = now

    def retime(self, obligations: Mapping[str, Any]) -> None:
        """Live obligations changed (a re-check said so): new limits apply at once."""
        self.timing = replace(self.timing, max_seconds=_max_seconds(obligations),
                              idle_seconds=_idle_seconds(obligations))

    def recheck_due(self, now: float, *, pushed: bool = False) -> bool:
        """Whether to decide again now (a push, or the interval ran out); schedules the next."""
        if pushed or now >= self.next_check:
            self.next_check = now + self.timing.recheck_seconds
            return True
        return False

    def after_verdict(self, now: float, outcome: str) -> HoldChange:
        """A re-authorization answered ``outcome`` (``go_on`` or ``step_up``; ``end`` is the relay's)."""
        if outcome == "step_up":
            if self.held_until is not None:
                return HoldChange.NONE  # the grace period runs from the first ask, not the latest
            self.held_until = now + self.timing.grace_seconds
            return HoldChange.HELD
        if outcome == "go_on" and self.held_until is not None:
            self.held_until = None
            self.last_input = now  # the code was input: the idle clock starts again
            return HoldChange.RELEASED
        return HoldChange.NONE

    def call(self, now: float) -> Call | None:
        """What is due now: an end, a warning (each once; the idle one again after new input), or nothing."""
        timing = self.timing
        left = self.started + timing.max_seconds - now
        idle_left = float("inf") if timing.watcher else self.last_input + timing.idle_seconds - now
        if left <= 0:
            return Call("The session reached the longest time this tier allows. Open the desktop again "
                        "to go on.", EndReason.MAX_DURATION)
        if idle_left <= 0:
            return Call("The session was idle for too long and was closed.", EndReason.IDLE)
        if self.held_until is not None and now >= self.held_until:
            return Call("No fresh code was entered in time, so the session was closed.",
                        EndReason.STEP_UP_TIMEOUT)
        if left <= timing.warn_seconds and "max" not in self.warned:
            self.warned.add("max")
            return Call(f"This session ends in {int(left)} seconds (the tier's maximum duration).")
        if idle_left <= timing.warn_seconds and "idle" not in self.warned:
            self.warned.add("idle")
            return Call(f"No input for a while: the session closes in {int(idle_left)} seconds "
                        "unless you use it.")
        if idle_left > timing.warn_seconds:
            self.warned.discard("idle")
        return None
