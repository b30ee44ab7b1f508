"""The supervisor clock, table by table: when a session is decided again, warned and ended.

Pure: "now" is a number here, as ``time.monotonic()`` is in the relay. No Channels, no guacd.
"""

from __future__ import annotations

import pytest

from streaming.desktop.clock import Call, HoldChange, SupervisorClock, Timing
from streaming.desktop.models import EndReason

TIMING = Timing(max_seconds=3600, idle_seconds=600, recheck_seconds=30, warn_seconds=60, grace_seconds=120)


def clock(timing: Timing = TIMING) -> SupervisorClock:
    return SupervisorClock(timing, now=1000.0)


@pytest.mark.parametrize(("obligations", "recheck_max", "expected"), [
    ({}, 30, Timing(8 * 3600, 30 * 60, 30, 60, 120)),
    ({"session_max_seconds": 900, "idle_seconds": 300, "reauth_interval_seconds": 10}, 30,
     Timing(900, 300, 10, 60, 120)),
    ({"reauth_interval_seconds": 300}, 30, Timing(8 * 3600, 30 * 60, 30, 60, 120)),
])
def test_a_tier_sets_the_limits_and_the_re_check_is_never_rarer_than_the_portal_allows(
        obligations, recheck_max, expected):
    assert Timing.from_obligations(obligations, recheck_max=recheck_max, warn=60, grace=120) == expected


@pytest.mark.parametrize(("after", "pushed", "due"), [
    (0, False, False),
    (29.9, False, False),
    (30, False, True),
    (1, True, True),  # a pushed revocation does not wait for the interval
])
def test_a_session_is_decided_again_every_interval_and_at_once_when_pushed(after, pushed, due):
    assert clock().recheck_due(1000.0 + after, pushed=pushed) is due


def test_after_a_re_check_the_next_one_is_a_whole_interval_later():
    c = clock()
    assert c.recheck_due(1001.0, pushed=True)
    assert not c.recheck_due(1030.0)
    assert c.recheck_due(1031.0)


@pytest.mark.parametrize(("elapsed", "idle_for", "expected"), [
    (10, 10, None),
    (3600, 0, Call("The session reached the longest time this tier allows. Open the desktop again to go on.",
                   EndReason.MAX_DURATION)),
    (700, 600, Call("The session was idle for too long and was closed.", EndReason.IDLE)),
    (3550, 0, Call("This session ends in 50 seconds (the tier's maximum duration).")),
    (560, 560, Call("No input for a while: the session closes in 40 seconds unless you use it.")),
    (3700, 700, Call("The session reached the longest time this tier allows. Open the desktop again to go on.",
                     EndReason.MAX_DURATION)),  # the maximum duration wins over idleness
])
def test_what_a_person_is_told_as_the_idle_and_maximum_duration_limits_come_near(elapsed, idle_for, expected):
    c = clock()
    c.touch(1000.0 + elapsed - idle_for)
    assert c.call(1000.0 + elapsed) == expected


def test_each_warning_is_given_once():
    c = clock()
    c.touch(1000.0 + 3500)
    assert c.call(1000.0 + 3550) is not None and c.call(1000.0 + 3551) is None


def test_the_idle_warning_comes_again_after_the_person_used_the_desktop_and_went_idle_again():
    c = clock()
    assert c.call(1000.0 + 560).end is None  # warned
    c.touch(1000.0 + 570)
    assert c.call(1000.0 + 600) is None  # input came: the warning is cleared
    assert c.call(1000.0 + 570 + 545).message.startswith("No input for a while")


def test_a_watcher_is_never_ended_for_idleness_since_they_send_no_input_by_design():
    c = clock(Timing(3600, 600, 30, 60, 120, watcher=True))
    assert c.call(1000.0 + 1200) is None


@pytest.mark.parametrize(("outcomes", "changes", "held_until"), [
    (["step_up"], [HoldChange.HELD], 1010.0 + 120),
    (["step_up", "step_up"], [HoldChange.HELD, HoldChange.NONE], 1010.0 + 120),  # grace runs from the first
    (["step_up", "go_on"], [HoldChange.HELD, HoldChange.RELEASED], None),
    (["go_on"], [HoldChange.NONE], None),
])
def test_a_step_up_verdict_holds_input_once_and_a_later_go_on_releases_it(outcomes, changes, held_until):
    c = clock()
    got = [c.after_verdict(1010.0 + 5 * i, outcome) for i, outcome in enumerate(outcomes)]
    assert got == changes
    assert c.held_until == held_until


def test_no_fresh_code_within_the_grace_period_ends_the_session():
    c = clock()
    c.after_verdict(1010.0, "step_up")
    c.touch(1100.0)
    assert c.call(1129.0) is None
    assert c.call(1130.0) == Call("No fresh code was entered in time, so the session was closed.",
                                  EndReason.STEP_UP_TIMEOUT)


def test_a_fresh_code_counts_as_input_so_the_idle_clock_starts_again():
    c = clock()
    c.after_verdict(1500.0, "step_up")
    c.after_verdict(1590.0, "go_on")
    assert c.last_input == 1590.0 and not c.held
    assert c.call(1590.0 + 500) is None  # 100 s of idleness left: not even a warning


def test_a_tier_shortening_the_maximum_duration_mid_session_applies_at_once():
    c = clock()
    c.touch(1000.0 + 990)
    assert c.call(1000.0 + 1000) is None
    c.retime({"session_max_seconds": 900, "idle_seconds": 600})
    assert c.call(1000.0 + 1000).end is EndReason.MAX_DURATION
