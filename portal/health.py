"""Liveness and readiness probes, and which dependency an outage is about.

``/healthz`` says the process answers. ``/readyz`` checks each dependency the portal cannot
work without and names the ones that fail, so a load balancer (and a person) knows why. An
anonymous caller learns names and states only: a driver's error text carries hosts, ports and
database names, which tell an attacker where to go next. Whoever may read ``/metrics``
(``PORTAL_METRICS_NETWORKS``) also gets those details.

The 503 page ("a security service is unreachable") says which dependency is down through
:func:`unavailable_context`, from the exception that stopped the request.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import Callable

from django.conf import settings
from django.db import connection

from portal.network import is_trusted

__all__ = ["DEPENDENCY_CHECKS", "DEPENDENCY_ERRORS", "DEPENDENCY_ERROR_NAMES", "DEPENDENCY_LABELS",
           "check_database", "check_redis", "failed_dependency", "readiness", "readiness_report",
           "unavailable_context"]

logger = logging.getLogger(__name__)

OK = "ok"
UNAVAILABLE = "unavailable"


def _dependency_errors() -> tuple[type[BaseException], ...]:
    import redis
    from django.db import DatabaseError

    return (DatabaseError, ConnectionError, TimeoutError, redis.exceptions.RedisError)


# What "a dependency is down" looks like from inside a request: answered 503, never 500,
# and never an allow (DESIGN.md section 4, fail closed).
DEPENDENCY_ERRORS = _dependency_errors()


def _dependency_error_names() -> dict[type[BaseException], str]:
    import psycopg
    import redis
    from django.db import DatabaseError

    return {DatabaseError: "database", sqlite3.Error: "database", psycopg.Error: "database",
            redis.exceptions.RedisError: "redis"}


# Exception type -> dependency name, for the 503 page. Enforcement points may add their own
# (as they add checks to DEPENDENCY_CHECKS); a type not listed leaves the page generic.
DEPENDENCY_ERROR_NAMES: dict[type[BaseException], str] = _dependency_error_names()

# How the 503 page names each dependency to a person who has never heard of it.
DEPENDENCY_LABELS: dict[str, str] = {
    "database": "the database (accounts, policies and the audit trail)",
    "redis": "Redis (the portal's cache and message bus)",
    "guacd": "guacd (the gateway to remote desktops)",
}


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_redis() -> None:
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=2,
                                  socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _checks() -> dict[str, Callable[[], None]]:
    checks: dict[str, Callable[[], None]] = {"database": check_database}
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        checks["redis"] = check_redis
    checks.update(DEPENDENCY_CHECKS)
    return checks


# Enforcement points register further dependencies here (the desktop broker adds guacd).
DEPENDENCY_CHECKS: dict[str, Callable[[], None]] = {}


def _run_checks() -> dict[str, str | None]:
    """Dependency name -> None when it answered, else the error in words (for operators)."""
    results: dict[str, str | None] = {}
    for name, check in _checks().items():
        try:
            check()
        except Exception as exc:
            results[name] = f"{type(exc).__name__}: {exc}"[:300]
            logger.warning("readiness: %s unavailable: %s", name, results[name])
        else:
            results[name] = None
    return results


def readiness() -> dict[str, str]:
    """Run every check; map dependency name to "ok" or "unavailable" (no driver text)."""
    return {name: OK if error is None else UNAVAILABLE for name, error in _run_checks().items()}


def readiness_report(client_address: str) -> tuple[dict[str, object], int]:
    """The ``/readyz`` body and status; error details only for the monitoring networks."""
    results = _run_checks()
    checks = {name: OK if error is None else UNAVAILABLE for name, error in results.items()}
    failing = sorted(name for name, error in results.items() if error is not None)
    body: dict[str, object] = {"status": UNAVAILABLE if failing else OK, "checks": checks,
                               "failing": failing}
    if failing and is_trusted(client_address, settings.PORTAL_METRICS_NETWORKS):
        body["details"] = {name: results[name] for name in failing}
    return body, 503 if failing else 200


def failed_dependency(exc: BaseException | None) -> str | None:
    """The dependency whose failure ``exc`` is (or was caused by), or None if it is unclear."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        for kind, name in DEPENDENCY_ERROR_NAMES.items():
            if isinstance(current, kind):
                return name
        pending += [current.__cause__, current.__context__]
    return None


def unavailable_context(exc: BaseException | None = None) -> dict[str, str]:
    """Template context for ``errors/503.html``: which dependency is down, in words.

    Without ``exc``, the exception being handled (``sys.exc_info``) is used; the page stays
    generic when neither names a known dependency.
    """
    name = failed_dependency(exc if exc is not None else sys.exc_info()[1])
    if name is None:
        return {}
    return {"dependency": name, "dependency_label": DEPENDENCY_LABELS.get(name, name)}
