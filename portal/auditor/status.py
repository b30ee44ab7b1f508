"""What the auditor is told about the chain: exactly what was verified, when, and what was not.

A verdict is only ever about the events a verification walked. Events written after it are
counted and named as not yet verified, so the page never says "Intact" over events nobody
checked (issue 16). Pure: the view passes in the last verification, the chain head and the
clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

__all__ = ["ChainState", "ChainStatus", "Verification", "chain_status"]


class ChainState(StrEnum):
    UNVERIFIED = "unverified"  # no verification has finished yet
    INTACT = "intact"  # verified, and nothing was written since
    PARTLY_VERIFIED = "partly-verified"  # verified up to an event; newer ones wait for the next run
    BROKEN = "broken"  # the last verification found a break


class Verification(Protocol):
    """What is read of a :class:`~portal.audit.models.ChainVerification`."""

    time: datetime
    ok: bool
    head_seq: int


@dataclass(frozen=True)
class ChainStatus:
    """The chain's state in words, with the numbers the words come from."""

    state: ChainState
    head_seq: int
    verified_seq: int | None
    verified_at: datetime | None
    unverified: int
    next_due: datetime | None
    overdue: bool

    @property
    def verdict(self) -> str:
        """The short headline: never "Intact" while events are unverified."""
        if self.state is ChainState.BROKEN:
            return _("Broken: the trail was tampered with")
        if self.state is ChainState.INTACT:
            return _("Intact")
        if self.state is ChainState.PARTLY_VERIFIED and not self.verified_seq:
            return _("No event verified yet")
        if self.state is ChainState.PARTLY_VERIFIED:
            return _("Verified up to event #%(seq)d") % {"seq": self.verified_seq}
        return _("Not verified yet")

    @property
    def sentence(self) -> str:
        """What was verified when, and how many newer events are not yet."""
        stamp = f"{self.verified_at:%Y-%m-%d %H:%M:%S} UTC" if self.verified_at else ""
        newer = ngettext("%(count)d newer event not yet verified", "%(count)d newer events not yet verified",
                         self.unverified) % {"count": self.unverified}
        if self.state is ChainState.UNVERIFIED:
            return ngettext("%(count)d event not yet verified.", "%(count)d events not yet verified.",
                            self.unverified) % {"count": self.unverified}
        if self.verified_seq == 0 and self.unverified == 0:
            return _("The trail was empty when it was verified at %(time)s.") % {"time": stamp}
        if self.verified_seq == 0:
            return _("The trail was still empty when it was verified at %(time)s; %(newer)s.") % {
                "time": stamp, "newer": newer}
        verified = _("Verified up to event #%(seq)d at %(time)s") % {"seq": self.verified_seq, "time": stamp}
        if self.unverified:
            return f"{verified}; {newer}."
        return _("%(verified)s; no newer events.") % {"verified": verified}


def chain_status(latest: Verification | None, head_seq: int, *, interval_seconds: float | None,
                 now: datetime) -> ChainStatus:
    """Combine the last verification with the current chain head.

    ``overdue`` when the last run is older than two intervals and a minute (one missed run is
    tolerated, a stopped scheduler is not); without any run it is never overdue, the page
    says "not verified yet" instead.
    """
    if latest is None:
        return ChainStatus(ChainState.UNVERIFIED, head_seq, None, None, head_seq, None, False)
    unverified = max(0, head_seq - latest.head_seq)
    if not latest.ok:
        state = ChainState.BROKEN
    elif unverified:
        state = ChainState.PARTLY_VERIFIED
    else:
        state = ChainState.INTACT
    next_due = latest.time + timedelta(seconds=interval_seconds) if interval_seconds else None
    overdue = bool(interval_seconds) and now - latest.time > timedelta(seconds=2 * interval_seconds + 60)
    return ChainStatus(state, head_seq, latest.head_seq, latest.time, unverified, next_due, overdue)
