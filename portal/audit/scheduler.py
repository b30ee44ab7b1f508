"""The embedded scheduler: the audit jobs run on their schedule even when no Celery beat runs.

Without ``REDIS_URL`` Celery is eager and nothing starts a worker or beat (the demo's
default), so the chain would never be verified again after start-up and the auditor's page
would go on showing an old verdict. In that case each portal process runs the audit trail's
beat entries (``audit-*`` in ``CELERY_BEAT_SCHEDULE``: chain verification, SIEM forwarding,
grant expiry, retention) itself, in one daemon thread, at the intervals beat would use. It
is started by the ASGI lifespan (so ``manage.py`` commands and the test client never start
it) and only when no beat can run. Every job is idempotent (STYLE.md, convention 12), so two
portal processes each running it, or a run overlapping a manual ``verify_audit``, is safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils.module_loading import import_string

__all__ = [
    "EMBEDDED_PREFIX", "EmbeddedScheduler", "ScheduledJob", "due_jobs", "embedded_jobs", "embedded_scheduler",
    "scheduler_wanted", "start_embedded_scheduler", "stop_embedded_scheduler", "with_embedded_scheduler",
]

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "audit-"  # the beat entries of this package; other apps keep their own timers
START_DELAY_SECONDS = 2.0  # the first round runs just after start-up, not during it
MAX_SLEEP_SECONDS = 30.0  # how long the thread sleeps at most between looks at the clock


@dataclass(frozen=True)
class ScheduledJob:
    """One beat entry as the embedded scheduler runs it."""

    name: str
    task: str
    interval: float


def embedded_jobs(schedule: Mapping[str, Mapping[str, Any]]) -> list[ScheduledJob]:
    """The ``audit-*`` entries of a beat schedule that run at a fixed interval, by name."""
    jobs = []
    for name, entry in sorted(schedule.items()):
        every = entry.get("schedule")
        if name.startswith(EMBEDDED_PREFIX) and isinstance(every, int | float) and every > 0:
            jobs.append(ScheduledJob(name, str(entry["task"]), float(every)))
    return jobs


def due_jobs(jobs: list[ScheduledJob], last_run: Mapping[str, float], now: float) -> list[ScheduledJob]:
    """The jobs whose interval has passed since they last ran (never run: due now)."""
    return [job for job in jobs if job.name not in last_run or now - last_run[job.name] >= job.interval]


def _seconds_to_next(jobs: list[ScheduledJob], last_run: Mapping[str, float], now: float) -> float:
    waits = [job.interval - (now - last_run.get(job.name, now - job.interval)) for job in jobs]
    return max(0.5, min([MAX_SLEEP_SECONDS, *waits]))


class EmbeddedScheduler:
    """Runs ``jobs`` in one daemon thread until :meth:`stop`; a failing job waits for its next turn."""

    def __init__(self, jobs: list[ScheduledJob], *, start_delay: float = START_DELAY_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 run_task: Callable[[str], Any] | None = None) -> None:
        self.jobs = jobs
        self.start_delay = start_delay
        self.clock = clock
        self.run_task = run_task or _run_task
        self.last_run: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_pending(self) -> list[str]:
        """Run every due job once (in order); return the names of those that ran."""
        ran = []
        for job in due_jobs(self.jobs, self.last_run, self.clock()):
            self.last_run[job.name] = self.clock()
            try:
                self.run_task(job.task)
            except Exception:
                # The thread must outlive a failing job (database briefly locked, a SIEM
                # down): the failure is logged with its traceback and the job runs next turn.
                log.exception("embedded scheduler: %s (%s) failed", job.name, job.task)
            ran.append(job.name)
        return ran

    def _loop(self) -> None:
        if self._stop.wait(self.start_delay):
            return
        try:
            while not self._stop.is_set():
                self.run_pending()
                close_old_connections()  # this thread's connection, as after a request
                self._stop.wait(_seconds_to_next(self.jobs, self.last_run, self.clock()))
        finally:
            connections.close_all()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="portal-embedded-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _run_task(task_path: str) -> Any:
    """Run a Celery task's body here and now, as a worker would.

    Called directly, a task with ``autoretry_for`` raises instead of retrying at once in a
    loop (what an eager ``apply`` would do): the scheduler's next turn is the retry.
    """
    return import_string(task_path)()


def scheduler_wanted() -> bool:
    """True when no beat can run: Celery is eager (no broker), unless a setting turns it off."""
    return bool(settings.CELERY_TASK_ALWAYS_EAGER) and bool(
        getattr(settings, "PORTAL_EMBEDDED_SCHEDULER", True))


_lock = threading.Lock()
_scheduler: EmbeddedScheduler | None = None


def embedded_scheduler() -> EmbeddedScheduler | None:
    """This process's running scheduler, if any."""
    return _scheduler


def start_embedded_scheduler() -> EmbeddedScheduler | None:
    """Start this process's scheduler once, when no beat runs; return it (None when not wanted)."""
    global _scheduler
    if not scheduler_wanted():
        return None
    with _lock:
        if _scheduler is None:
            _scheduler = EmbeddedScheduler(embedded_jobs(settings.CELERY_BEAT_SCHEDULE))
            _scheduler.start()
            log.info("embedded scheduler started: %s", ", ".join(j.name for j in _scheduler.jobs))
        return _scheduler


def stop_embedded_scheduler() -> None:
    """Stop this process's scheduler (the server is shutting down)."""
    global _scheduler
    with _lock:
        scheduler, _scheduler = _scheduler, None
    if scheduler is not None:
        scheduler.stop()


Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]


def with_embedded_scheduler(lifespan: ASGIApp) -> ASGIApp:
    """Wrap an ASGI lifespan app: start the scheduler at ``startup``, stop it at ``shutdown``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def watched() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "lifespan.startup":
                start_embedded_scheduler()
            elif message["type"] == "lifespan.shutdown":
                stop_embedded_scheduler()
            return message

        await lifespan(scope, watched, send)

    return app
