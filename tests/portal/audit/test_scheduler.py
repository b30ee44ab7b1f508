"""Without Redis no Celery beat runs: the portal process itself verifies the chain on schedule."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from portal.audit.chain import record
from portal.audit.models import ChainVerification
from portal.audit.scheduler import (
    EmbeddedScheduler,
    ScheduledJob,
    due_jobs,
    embedded_jobs,
    start_embedded_scheduler,
)
from tests.server import run_portal

VERIFY = "portal.audit.tasks.verify_audit_chain"


def test_the_embedded_scheduler_runs_the_audit_jobs_of_the_beat_schedule_at_their_intervals():
    jobs = {job.name: job for job in embedded_jobs(settings.CELERY_BEAT_SCHEDULE)}
    assert jobs["audit-verify-chain"] == ScheduledJob("audit-verify-chain", VERIFY, 900.0)
    assert {"audit-forward-to-siem", "audit-expire-grants", "audit-retention"} <= set(jobs)
    assert not [name for name in jobs if not name.startswith("audit-")]


@pytest.mark.parametrize(("last_run", "now", "due"), [
    ({}, 0.0, ["a", "b"]),
    ({"a": 0.0, "b": 0.0}, 59.0, []),
    ({"a": 0.0, "b": 0.0}, 60.0, ["a"]),
    ({"a": 60.0, "b": 0.0}, 900.0, ["a", "b"]),
])
def test_a_job_is_due_when_its_interval_has_passed_or_it_never_ran(last_run, now, due):
    jobs = [ScheduledJob("a", "x.a", 60.0), ScheduledJob("b", "x.b", 900.0)]
    assert [job.name for job in due_jobs(jobs, last_run, now)] == due


def test_a_round_verifies_the_chain_and_stores_what_it_found(db):
    for _ in range(3):
        record("decision", outcome="allow", actor="erin", resource="wiki")
    scheduler = EmbeddedScheduler([ScheduledJob("audit-verify-chain", VERIFY, 900.0)])
    assert scheduler.run_pending() == ["audit-verify-chain"]
    verification = ChainVerification.objects.get()
    assert (verification.ok, verification.checked, verification.head_seq) == (True, 3, 3)
    assert scheduler.run_pending() == []  # not again before its interval


def test_a_failing_job_does_not_stop_the_others_and_runs_again_next_turn(db):
    now = [0.0]
    jobs = [ScheduledJob("audit-broken", "portal.audit.no_such_module.task", 60.0),
            ScheduledJob("audit-verify-chain", VERIFY, 60.0)]
    scheduler = EmbeddedScheduler(jobs, clock=lambda: now[0])
    assert scheduler.run_pending() == ["audit-broken", "audit-verify-chain"]
    assert ChainVerification.objects.count() == 1
    now[0] = 61.0
    assert scheduler.run_pending() == ["audit-broken", "audit-verify-chain"]
    assert ChainVerification.objects.count() == 2


def test_with_redis_the_portal_leaves_scheduling_to_celery_beat(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    assert start_embedded_scheduler() is None


def test_a_running_portal_without_redis_verifies_the_chain_by_itself(transactional_db):
    for _ in range(5):
        record("decision", outcome="allow", actor="erin", resource="wiki")
    with run_portal({"REDIS_URL": ""}):
        deadline = time.monotonic() + 20
        while not ChainVerification.objects.exists():
            assert time.monotonic() < deadline, "the portal did not verify the chain on its own"
            time.sleep(0.2)
    verification = ChainVerification.objects.get()
    assert verification.ok and verification.head_seq >= 5
