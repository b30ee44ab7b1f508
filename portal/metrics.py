"""Prometheus metrics: what a gateway operator watches (principle 5).

Counters are incremented where things happen (sign-in, decisions); ``/metrics`` serves them
only to the networks named in ``PORTAL_METRICS_NETWORKS`` (loopback by default), judged on the
client address after trusted-proxy handling, so a load balancer cannot expose it by accident.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from portal.network import is_trusted

__all__ = ["DECISIONS", "DECISION_SECONDS", "SIGN_INS", "metrics_view"]

SIGN_INS = Counter("portal_sign_in_steps_total", "Sign-in steps by step and outcome.", ["step", "outcome"])
DECISIONS = Counter("portal_decisions_total", "Policy decisions by outcome, tier and action kind.",
                    ["outcome", "tier", "action"])
DECISION_SECONDS = Histogram("portal_decision_seconds", "Time to gather inputs and decide.",
                             buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))


@login_not_required
@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition, for monitoring networks only (404 for everyone else)."""
    if not is_trusted(getattr(request, "client_address", ""), settings.PORTAL_METRICS_NETWORKS):
        return HttpResponse(status=404)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
