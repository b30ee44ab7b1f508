"""The login throttle itself, raced by real threads against the real cache (Redis in CI)."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.cache import cache

from portal.accounts.throttle import LoginThrottle


def _race(throttles: list[LoginThrottle]) -> list[int]:
    start = threading.Barrier(len(throttles))
    waits: list[int] = []
    lock = threading.Lock()

    def attempt(throttle: LoginThrottle) -> None:
        start.wait()
        wait = throttle.reserve()
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=attempt, args=(t,)) for t in throttles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return waits


def test_forty_racing_guesses_reserve_exactly_the_limit_every_time():
    for round_ in range(30):
        cache.clear()
        waits = _race([LoginThrottle("target", f"10.0.0.{round_}")] * 40)
        assert waits.count(0) == 5, f"round {round_}: {waits.count(0)} guesses were let through"


def test_after_the_pause_one_racing_guess_goes_through_and_the_gate_closes_again(settings):
    settings.PORTAL_LOGIN_FIRST_PAUSE_SECONDS = 1
    throttle = LoginThrottle("target", "10.0.0.1")
    assert [throttle.reserve() for _ in range(6)] == [0] * 5 + [1]
    time.sleep(1.1)
    waits = _race([throttle] * 20)
    assert waits.count(0) == 1
    assert throttle.retry_after() == 2, "the next pause is twice as long"


@pytest.mark.django_db
def test_a_success_redeems_only_that_persons_failures_on_the_address(settings):
    settings.PORTAL_LOGIN_ADDRESS_FAILURE_LIMIT = 6
    sprayer = [LoginThrottle(f"guess{i}", "10.0.0.9") for i in range(3)]
    for throttle in sprayer:
        assert throttle.reserve() == 0
    person = LoginThrottle("erin", "10.0.0.9")
    for _ in range(3):
        assert person.reserve() == 0
    person.succeeded()
    assert [LoginThrottle(f"more{i}", "10.0.0.9").reserve() for i in range(4)] == [0, 0, 0, 30]


def test_a_username_whose_pause_was_evicted_from_the_cache_is_paused_again_not_locked_for_good(settings):
    from portal.accounts.throttle import _key

    settings.PORTAL_LOGIN_FIRST_PAUSE_SECONDS = 1
    throttle = LoginThrottle("target", "10.0.0.1")
    assert [throttle.reserve() for _ in range(5)] == [0] * 5
    cache.delete(_key("user", "target") + ":gate")  # Redis evicted it under memory pressure
    assert throttle.reserve() == 1
    time.sleep(1.1)
    assert throttle.reserve() == 0
