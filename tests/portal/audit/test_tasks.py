"""Background jobs: chain verification (also on a real Celery worker), grant expiry, the beat schedule."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.db import connection

from portal.audit.chain import record
from portal.audit.models import AuditEvent, ChainVerification
from portal.audit.tasks import (
    JOB_ACTOR,
    forward_events_to_siem,
    verify_and_store,
    verify_audit_chain,
)
from portal.celery import app
from tests.conftest import require, sign_in
from tests.factories import UserFactory, enrol_totp
from tiers.tasks import expire_grants


def tamper(seq: int, outcome: str = "allow") -> None:
    """Rewrite one event with raw SQL, as an intruder with database access would."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        try:
            cursor.execute("UPDATE audit_auditevent SET outcome = %s WHERE seq = %s", [outcome, seq])
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def _trail(n: int = 4) -> list[AuditEvent]:
    return [record("decision", outcome="deny", actor="bob", resource="payroll", detail={"tier": "high"})
            for _ in range(n)]


# --- verification --------------------------------------------------------------------------

@pytest.mark.django_db
def test_verification_of_an_intact_chain_is_stored():
    events = _trail()
    result = verify_audit_chain.apply().get()
    verification = ChainVerification.objects.get(pk=result["verification"])
    assert verification.ok and verification.problems == []
    assert verification.checked == len(events) and verification.head_seq == events[-1].seq
    assert not AuditEvent.objects.filter(action="audit.chain_broken").exists()


@pytest.mark.django_db
def test_a_tampered_chain_raises_one_alert_however_often_it_is_verified():
    events = _trail()
    tamper(events[1].seq)
    first = verify_and_store()
    assert not first.ok
    assert first.problems == [f"event #{events[1].seq} was changed after it was written"]
    alert = AuditEvent.objects.get(action="audit.chain_broken")
    assert (alert.outcome, alert.actor) == ("alert", JOB_ACTOR)
    assert alert.reasons[0]["message"] == first.problems[0]
    assert alert.detail["verification"] == first.pk
    second = verify_and_store()  # the alert was appended to the broken chain: the break is still there
    assert not second.ok and second.problems == first.problems
    assert AuditEvent.objects.filter(action="audit.chain_broken").count() == 1


@pytest.mark.django_db
def test_a_new_break_raises_a_new_alert():
    events = _trail()
    tamper(events[0].seq)
    verify_and_store()
    tamper(events[2].seq)
    verify_and_store()
    assert AuditEvent.objects.filter(action="audit.chain_broken").count() == 2


# --- schedule ------------------------------------------------------------------------------

def test_every_audit_job_is_scheduled_with_an_expiry_shorter_than_its_interval():
    schedule = django_settings.CELERY_BEAT_SCHEDULE
    for name, task in [("audit-verify-chain", verify_audit_chain), ("audit-forward-to-siem", forward_events_to_siem),
                       ("audit-expire-grants", expire_grants)]:
        entry = schedule[name]
        assert entry["task"] == task.name and task.name in app.tasks
        assert 0 < entry["options"]["expires"] < entry["schedule"]


# --- a real worker -------------------------------------------------------------------------

def _database_url_for_the_worker() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def celery_worker_process(transactional_db):
    """``celery -A portal worker`` in its own process, on Redis, seeing the test database."""
    broker = django_settings.CELERY_BROKER_URL
    require(not django_settings.CELERY_TASK_ALWAYS_EAGER and broker.startswith("redis"),
            "Redis for Celery (REDIS_URL)")
    require(_redis_reachable(broker), f"Redis at {broker}")
    queue = f"audit-test-{uuid.uuid4().hex[:10]}"  # no other worker on this Redis takes our task
    env = {**os.environ, "DATABASE_URL": _database_url_for_the_worker(), "REDIS_URL": broker}
    log = tempfile.NamedTemporaryFile("w+", prefix="celery-worker-", suffix=".log", delete=False)  # noqa: SIM115
    worker = subprocess.Popen(
        [str(Path(sys.executable).with_name("celery")), "-A", "portal", "worker", "--pool", "solo",
         "--queues", queue, "--hostname", f"{queue}@%h", "--without-mingle", "--without-gossip",
         "--without-heartbeat", "--loglevel", "INFO"],
        cwd=django_settings.BASE_DIR,
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield queue, Path(log.name)
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)
        log.close()
        os.unlink(log.name)


def _run_on_worker(queue: str, log: Path) -> dict:
    result = verify_audit_chain.apply_async(queue=queue)
    try:
        return result.get(timeout=90)
    except Exception as exc:
        pytest.fail(f"the worker did not answer: {exc!r}\n--- worker log ---\n{log.read_text()[-4000:]}")


def test_a_real_worker_verifies_the_chain_and_the_auditor_sees_a_break(celery_worker_process, client):
    queue, log = celery_worker_process
    events = _trail()

    first = _run_on_worker(queue, log)
    verification = ChainVerification.objects.get(pk=first["verification"])
    assert verification.ok and verification.checked == len(events)

    tamper(events[2].seq)
    second = _run_on_worker(queue, log)
    assert second["ok"] is False
    broken = ChainVerification.objects.get(pk=second["verification"])
    assert broken.problems == [f"event #{events[2].seq} was changed after it was written"]
    assert AuditEvent.objects.filter(action="audit.chain_broken").count() == 1

    auditor = UserFactory(username="audrey", role="auditor")
    auditor.totp = enrol_totp(auditor)
    sign_in(client, auditor)
    body = client.get("/audit/").content.decode()
    assert "Broken: the trail was tampered with" in body
    assert f"event #{events[2].seq} was changed after it was written" in body
