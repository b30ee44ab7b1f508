"""Searching the audit trail: the auditor's filters, one queryset, keyset pages.

Pages run newest first on ``(time, seq)`` and move with a cursor (the ``seq`` of the row
at the page edge), never with ``OFFSET``: page 20 000 of a million events costs what page 1
costs, and each single-column filter is served by its ``(column, time)`` index (migration
0003). Events are append-only, so a cursor never points at something that changed.
"""

from __future__ import annotations

import time as clock
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime

from django import forms
from django.db.models import Count, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.lookups import Exact

from portal.audit.models import AuditEvent
from tiers.models import Tier

__all__ = [
    "KNOWN_ACTIONS", "KNOWN_OUTCOMES", "AuditFilter", "AuditSearchForm", "SearchPage", "TierCount",
    "denials_by_tier", "filter_events", "search_page",
]

# Offered as suggestions in the form (free text is still accepted: other parts of the
# portal add their own actions). Listed, not queried: DISTINCT over a million rows is slow.
KNOWN_ACTIONS = (
    "decision", "login.password", "logout", "mfa.verify", "mfa.enrol", "mfa.backup_codes",
    "mfa.step_up", "access.request", "access.approve", "access.deny", "access.revoke",
    "access.expired", "catalog.apply", "catalog.retag", "tier.update", "admin.add", "admin.change",
    "admin.delete", "audit.view",
    "audit.export", "audit.forbidden", "audit.chain_broken", "audit.playback",
    "desktop.start", "desktop.end", "desktop.kill", "desktop.hold", "desktop.recording",
    "desktop.clipboard.in", "desktop.clipboard.out", "desktop.file.transfer",
)
KNOWN_OUTCOMES = (
    "allow", "deny", "step_up", "isolate", "success", "failure", "throttled", "refused", "expired", "alert",
)


@dataclass(frozen=True)
class AuditFilter:
    """What the auditor asked for; empty fields do not filter."""

    actor: str = ""
    resource: str = ""
    outcome: str = ""
    action: str = ""
    zone: str = ""
    tier: str = ""
    since: datetime | None = None
    until: datetime | None = None
    q: str = ""
    session: str = ""  # a desktop session id: events naming it in ``detail.session``

    def as_params(self) -> dict[str, str]:
        """The non-empty filters as query parameters (times in ISO 8601, UTC)."""
        params = {}
        for name, value in asdict(self).items():
            if isinstance(value, datetime):
                params[name] = value.isoformat()
            elif value:
                params[name] = str(value)
        return params


class AuditSearchForm(forms.Form):
    """The search filters, as query parameters (GET only: searching changes nothing)."""

    actor = forms.CharField(required=False, max_length=150, label="User",
                            help_text="Username, exactly.")
    resource = forms.CharField(required=False, max_length=100, label="Resource",
                               help_text="Resource slug, exactly.")
    outcome = forms.CharField(required=False, max_length=32, label="Outcome")
    action = forms.CharField(required=False, max_length=64, label="Action")
    zone = forms.CharField(required=False, max_length=64, label="Network zone")
    tier = forms.CharField(required=False, max_length=32, label="Tier")
    since = forms.DateTimeField(required=False, label="From (UTC)",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, label="Until (UTC)",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    q = forms.CharField(required=False, max_length=200, label="Text in reasons",
                        help_text="Any words of the reasons, e.g. a rule name or a value.")
    session = forms.CharField(required=False, max_length=64, label="Desktop session",
                              help_text="A session id: the events that name it.")

    def clean(self) -> dict[str, object]:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            raise forms.ValidationError("“From” must be before “Until”.")
        for name in ("actor", "resource", "outcome", "action", "zone", "tier", "q"):
            data[name] = (data.get(name) or "").strip()
        return data

    def clean_session(self) -> str:
        raw = (self.cleaned_data.get("session") or "").strip()
        if not raw:
            return ""
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            raise forms.ValidationError("Not a session id (a UUID).") from None

    def to_filter(self) -> AuditFilter:
        """The validated filters (call after ``is_valid()``)."""
        data = self.cleaned_data
        return AuditFilter(**{name: data.get(name) or (None if name in ("since", "until") else "")
                              for name in AuditFilter.__dataclass_fields__})


def filter_events(criteria: AuditFilter, events: QuerySet[AuditEvent] | None = None) -> QuerySet[AuditEvent]:
    """The events matching ``criteria`` (unordered)."""
    events = AuditEvent.objects.all() if events is None else events
    exact = {name: getattr(criteria, name)
             for name in ("actor", "resource", "outcome", "action", "zone") if getattr(criteria, name)}
    events = events.filter(**exact)
    if criteria.tier:
        # detail ->> 'tier' = %s: the very expression the audit_tier_time_idx index holds
        # (a plain Exact, not the JSON key lookup, which compares JSON values instead).
        events = events.filter(Exact(KeyTextTransform("tier", "detail"), criteria.tier))
    if criteria.session:
        # Not indexed: narrow with a time, user or resource filter on a large trail.
        events = events.filter(Exact(KeyTextTransform("session", "detail"), criteria.session))
    if criteria.since:
        events = events.filter(time__gte=criteria.since)
    if criteria.until:
        events = events.filter(time__lt=criteria.until)
    if criteria.q:
        events = events.filter(reasons__icontains=criteria.q)
    return events


@dataclass(frozen=True)
class SearchPage:
    """One page of results, newest first, with the cursors to its neighbours."""

    events: list[AuditEvent]
    newer: int | None  # pass as ?after= to see the page before this one
    older: int | None  # pass as ?before= to see the page after this one
    elapsed_ms: float


def _anchor_time(seq: int) -> datetime | None:
    return AuditEvent.objects.filter(seq=seq).values_list("time", flat=True).first()


def search_page(criteria: AuditFilter, *, before: int | None = None, after: int | None = None,
                size: int = 50) -> SearchPage:
    """The page of matching events just older than ``before`` (or newer than ``after``)."""
    started = clock.perf_counter()
    events = filter_events(criteria)
    anchor = _anchor_time(after if after is not None else before) if (after or before) else None
    if anchor is not None and after is not None:
        rows = list(events.filter(time__gte=anchor).filter(Q(time__gt=anchor) | Q(seq__gt=after))
                    .order_by("time", "seq")[: size + 1])
        if not rows:  # nothing newer than the cursor: show the newest page
            return search_page(criteria, size=size)
        has_newer = len(rows) > size
        rows = rows[:size][::-1]
        newer = rows[0].seq if has_newer else None
        older = rows[-1].seq
    else:
        if anchor is not None:
            events = events.filter(time__lte=anchor).filter(Q(time__lt=anchor) | Q(seq__lt=before))
        rows = list(events.order_by("-time", "-seq")[: size + 1])
        has_older = len(rows) > size
        rows = rows[:size]
        newer = rows[0].seq if rows and anchor is not None else None
        older = rows[-1].seq if rows and has_older else None
    return SearchPage(rows, newer, older, (clock.perf_counter() - started) * 1000)


@dataclass(frozen=True)
class TierCount:
    """Denials and step-ups of one tier over a period."""

    tier: str
    deny: int
    step_up: int


def denials_by_tier(since: datetime) -> list[TierCount]:
    """Denials and step-ups since ``since``, per tier (the tier the decision recorded).

    Tiers come in catalog order (rank), those no longer in the catalog after them, and
    events without a tier (e.g. refused before a resource was known) last as "".
    """
    rows = (AuditEvent.objects.filter(time__gte=since, outcome__in=("deny", "step_up"))
            .annotate(tier=KeyTextTransform("tier", "detail"))
            .values("tier", "outcome").annotate(n=Count("id")))
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row["tier"] or "", {"deny": 0, "step_up": 0})[row["outcome"]] += row["n"]
    ranked = list(Tier.objects.order_by("rank", "name").values_list("name", flat=True))
    order = {name: i for i, name in enumerate(ranked)}
    names = sorted(counts, key=lambda t: (t == "", order.get(t, len(order)), t))
    return [TierCount(t, counts[t]["deny"], counts[t]["step_up"]) for t in names]
