"""Liveness and readiness probes.

``/healthz`` says the process answers. ``/readyz`` checks each dependency the portal cannot
work without and names the ones that fail, so a load balancer (and a person) knows why.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import connection

__all__ = ["DEPENDENCY_CHECKS", "DEPENDENCY_ERRORS", "check_database", "check_redis", "readiness"]


def _dependency_errors() -> tuple[type[BaseException], ...]:
    import redis
    from django.db import DatabaseError

    return (DatabaseError, ConnectionError, TimeoutError, redis.exceptions.RedisError)


# What "a dependency is down" looks like from inside a request: answered 503, never 500,
# and never an allow (DESIGN.md section 4, fail closed).
DEPENDENCY_ERRORS = _dependency_errors()


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


def readiness() -> dict[str, str]:
    """Run every check; map dependency name to "ok" or the error, in words."""
    results = {}
    for name, check in _checks().items():
        try:
            check()
        except Exception as exc:
            results[name] = f"unavailable: {type(exc).__name__}: {exc}"[:300]
        else:
            results[name] = "ok"
    return results
