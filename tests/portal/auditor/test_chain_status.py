"""The chain status in words: what was verified when, and what was not (issue 16)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from portal.auditor.status import ChainState, chain_status

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
FIFTEEN_MINUTES = 900.0


@dataclass(frozen=True)
class Run:
    time: datetime
    ok: bool
    head_seq: int


@pytest.mark.parametrize(("latest", "head", "state", "verdict", "sentence"), [
    (None, 0, ChainState.UNVERIFIED, "Not verified yet", "0 events not yet verified."),
    (None, 1, ChainState.UNVERIFIED, "Not verified yet", "1 event not yet verified."),
    (None, 161, ChainState.UNVERIFIED, "Not verified yet", "161 events not yet verified."),
    (Run(NOW, True, 0), 0, ChainState.INTACT, "Intact",
     "The trail was empty when it was verified at 2025-03-01 12:00:00 UTC."),
    (Run(NOW, True, 0), 161, ChainState.PARTLY_VERIFIED, "No event verified yet",
     "The trail was still empty when it was verified at 2025-03-01 12:00:00 UTC; "
     "161 newer events not yet verified."),
    (Run(NOW, True, 40), 40, ChainState.INTACT, "Intact",
     "Verified up to event #40 at 2025-03-01 12:00:00 UTC; no newer events."),
    (Run(NOW, True, 40), 41, ChainState.PARTLY_VERIFIED, "Verified up to event #40",
     "Verified up to event #40 at 2025-03-01 12:00:00 UTC; 1 newer event not yet verified."),
    (Run(NOW, True, 40), 47, ChainState.PARTLY_VERIFIED, "Verified up to event #40",
     "Verified up to event #40 at 2025-03-01 12:00:00 UTC; 7 newer events not yet verified."),
    (Run(NOW, False, 40), 47, ChainState.BROKEN, "Broken: the trail was tampered with",
     "Verified up to event #40 at 2025-03-01 12:00:00 UTC; 7 newer events not yet verified."),
])
def test_the_status_names_what_was_verified_and_never_says_intact_over_unverified_events(
        latest, head, state, verdict, sentence):
    status = chain_status(latest, head, interval_seconds=FIFTEEN_MINUTES, now=NOW)
    assert (status.state, status.verdict, status.sentence) == (state, verdict, sentence)
    if status.unverified:
        assert status.verdict != "Intact"


@pytest.mark.parametrize(("age_minutes", "overdue"), [(0, False), (30, False), (32, True), (24 * 60, True)])
def test_a_verification_older_than_two_intervals_and_a_minute_is_overdue(age_minutes, overdue):
    run = Run(NOW - timedelta(minutes=age_minutes), True, 3)
    status = chain_status(run, 3, interval_seconds=FIFTEEN_MINUTES, now=NOW)
    assert status.overdue is overdue
    assert status.next_due == run.time + timedelta(minutes=15)


def test_without_a_schedule_nothing_is_overdue_and_nothing_is_due():
    status = chain_status(Run(NOW - timedelta(days=3), True, 3), 3, interval_seconds=None, now=NOW)
    assert (status.overdue, status.next_due) == (False, None)
