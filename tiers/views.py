"""Pages of the catalog: My apps, access requests, and the admin's manage pages.

Views translate HTTP and call :mod:`tiers.pages` and :mod:`tiers.jit`. A page a user may not
see answers 404 (its existence is not revealed); a step they may see but not take answers
403 with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from portal.audit.chain import record_request
from tiers import jit, pages, policy_changes
from tiers.enforcement import load_resource
from tiers.filtersets import ResourceFilterSet
from tiers.forms import (
    AccessRequestForm,
    DecisionNoteForm,
    RetagForm,
    SimulatorForm,
    TierForm,
)
from tiers.jit import Origin
from tiers.models import AccessGrant, AccessRequest, PolicyChangeRequest, Resource, Tier, TierChange
from tiers.pages import render_denial, render_unavailable
from tiers.types import Action, ActionClass, ActionKind

__all__ = [
    "CATALOG_PERMISSION", "manage_change_decide", "manage_changes", "manage_grant_revoke",
    "manage_index", "manage_request_decide",
    "manage_requests", "manage_resource", "manage_resources", "manage_simulator",
    "manage_tier", "manage_tiers", "my_apps", "render_denial", "render_unavailable", "request_cancel",
    "requests_index",
]

CATALOG_PERMISSION = policy_changes.MANAGE_PERMISSION
APPROVE_PERMISSION = jit.APPROVE_PERMISSION

View = Callable[..., HttpResponse]


def permission_or_404(*perms: str) -> Callable[[View], View]:
    """Hide a page from anyone holding none of ``perms``: to them it does not exist."""
    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            if not any(request.user.has_perm(p) for p in perms):
                raise Http404
            return view(request, *args, **kwargs)
        return wrapped
    return decorator


def _with_durations(access_requests: Iterable[AccessRequest]) -> list[tuple[AccessRequest, str]]:
    return [(r, jit.duration_label(r.duration_seconds)) for r in access_requests]


# --- employees ------------------------------------------------------------------------------

@require_http_methods(["GET", "HEAD"])
def my_apps(request: HttpRequest) -> HttpResponse:
    """The resources the signed-in user may see, by tier, with what each needs to open now."""
    groups = pages.app_groups(request.user, request.session, request.client_address)
    return render(request, "tiers/my_apps.html", {"groups": groups})


@require_http_methods(["GET", "POST"])
def requests_index(request: HttpRequest) -> HttpResponse:
    """Ask for just-in-time access, and follow one's own requests and grants."""
    user = request.user
    form = AccessRequestForm(request.POST or None, user=user,
                             initial={"resource": request.GET.get("resource", "")})
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                jit.request_access(user, data["resource"], data["justification"], data["duration"],
                                   origin=Origin.of(request))
            except jit.JitError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Your request for {data['resource'].name} was sent to "
                                          "the approvers.")
                return redirect("requests:index")
        status = 400
    return render(request, "tiers/requests.html", {
        "form": form,
        "own_requests": _with_durations(AccessRequest.objects.filter(requester=user)
                                        .select_related("resource__tier", "decided_by")[:50]),
        "grants": jit.active_grants().filter(user=user),
    }, status=status)


@require_POST
def request_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Withdraw one's own pending request."""
    access_request = get_object_or_404(AccessRequest, pk=pk, requester=request.user)
    try:
        jit.cancel(access_request, request.user, origin=Origin.of(request))
    except jit.JitError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Your request for {access_request.resource.name} was withdrawn.")
    return redirect("requests:index")


# --- manage: index and catalog ------------------------------------------------------------------

@permission_or_404(CATALOG_PERMISSION, APPROVE_PERMISSION)
def manage_index(request: HttpRequest) -> HttpResponse:
    return render(request, "tiers/manage/index.html", {
        "pending_count": jit.pending_requests().count()
        if request.user.has_perm(APPROVE_PERMISSION) else None,
        "pending_changes": policy_changes.pending_changes().count()
        if request.user.has_perm(CATALOG_PERMISSION) else None,
    })


def _held_message(held: list[PolicyChangeRequest]) -> str:
    """Say that a change was held, what it would weaken, and that a second admin decides."""
    parts = [f"#{c.pk} {c.target_name}: {'; '.join(c.weakens)}" for c in held]
    return ("This lowers protection: it needs a second admin's approval. Nothing was changed for "
            f"it yet; waiting in Policy changes: {' | '.join(parts)}.")


def _resources_page(request: HttpRequest, retag_form: RetagForm, query: QueryDict,
                    status: int = 200) -> HttpResponse:
    filters = ResourceFilterSet.for_admin(query)
    resources = filters.qs if filters.is_valid() else filters.queryset
    selected = set(retag_form.data.getlist("resources")) if retag_form.is_bound else set()
    return render(request, "tiers/manage/resources.html", {
        "filters": filters.form, "resources": resources, "retag_form": retag_form, "selected": selected,
        "query": query.urlencode(), "tiers": Tier.objects.all(),
    }, status=status)


@permission_or_404(CATALOG_PERMISSION)
@require_http_methods(["GET", "HEAD", "POST"])
def manage_resources(request: HttpRequest) -> HttpResponse:
    """Every resource, filterable; POST re-tags the selected ones (each move kept and audited)."""
    if request.method != "POST":
        return _resources_page(request, RetagForm(), request.GET)
    form = RetagForm(request.POST)
    # Only the filters travel back, never a location: no open redirect.
    query = QueryDict(request.POST.get("query", ""))
    if not form.is_valid():
        return _resources_page(request, form, query, status=400)
    tier = form.cleaned_data["tier"]
    outcome = policy_changes.retag(form.cleaned_data["resources"], tier, request.user,
                                   reason=form.cleaned_data["reason"], origin=Origin.of(request))
    if outcome.moved or not outcome.held:
        messages.success(request, f"Moved {len(outcome.moved)} resource(s) to {tier.name}."
                         + (f" {outcome.unchanged} already had that tier." if outcome.unchanged else ""))
    for change in outcome.moved:
        messages.info(request, pages.live_effect(_as_before(change), tier))
    if outcome.held:
        messages.warning(request, _held_message(outcome.held))
    if request.POST.get("return_to") == "resource" and len(form.cleaned_data["resources"]) == 1:
        return redirect("manage:resource", slug=form.cleaned_data["resources"][0].slug)
    back = query.urlencode()
    return HttpResponseRedirect(reverse("manage:resources") + (f"?{back}" if back else ""))


def _as_before(change: TierChange) -> Resource:
    """The moved resource as it was before the move (for what the move does to live sessions)."""
    resource = Resource.objects.select_related("tier").get(pk=change.resource_id)
    before = Tier.objects.filter(name=change.from_tier).first()
    if before is not None:
        resource.tier = before
    return resource


@permission_or_404(CATALOG_PERMISSION)
@require_http_methods(["GET", "HEAD"])
def manage_resource(request: HttpRequest, slug: str) -> HttpResponse:
    """One resource: its settings, who it is shared with, and its tier history."""
    resource = get_object_or_404(
        Resource.objects.select_related("tier", "owner")
        .prefetch_related("allowed_groups", "allowed_users", "action_rules", "tier_changes"), slug=slug)
    lowering = policy_changes.lowering_moves(resource)
    retag_form = RetagForm(initial={"tier": resource.tier.name}, lowering=lowering)
    retag_form.fields["tier"].label = "Move to"
    return render(request, "tiers/manage/resource.html", {
        "resource": resource, "history": resource.tier_changes.all(),
        "retag_form": retag_form,
        "lowering": lowering, "tiers": Tier.objects.all(), "entry": pages.entry_point(resource),
        "effects": [(t.name, pages.live_effect(resource, t))
                    for t in Tier.objects.exclude(pk=resource.tier_id)],
        "pending": policy_changes.pending_changes().filter(resource=resource),
    })


@permission_or_404(CATALOG_PERMISSION)
@require_http_methods(["GET", "HEAD"])
def manage_tiers(request: HttpRequest) -> HttpResponse:
    """Every tier with its rules in words."""
    tiers = Tier.objects.prefetch_related("allowed_zones", "resources")
    return render(request, "tiers/manage/tiers.html", {
        "tiers": [(tier, pages.tier_rules(tier)) for tier in tiers]})


@permission_or_404(CATALOG_PERMISSION)
@require_http_methods(["GET", "POST"])
def manage_tier(request: HttpRequest, name: str) -> HttpResponse:
    """Edit a tier's rules; what changed is audited."""
    tier = get_object_or_404(Tier, name=name)
    form = TierForm(request.POST or None, tier=tier)
    context = {"tier": tier, "form": form,
               "pending": policy_changes.pending_changes().filter(tier=tier)}
    if request.method == "POST":
        if form.is_valid():
            outcome = policy_changes.edit_tier(tier, form.wanted_state(), request.user,
                                               reason=form.cleaned_data["reason"],
                                               origin=Origin.of(request))
            if outcome.applied or outcome.held is None:
                messages.success(request, f"Tier {tier.name} saved ({len(outcome.applied)} change(s)).")
            if outcome.held is not None:
                messages.warning(request, _held_message([outcome.held]))
            return redirect("manage:tiers")
        return render(request, "tiers/manage/tier_form.html", context, status=400)
    return render(request, "tiers/manage/tier_form.html", context)


# --- manage: policy changes (four eyes) -------------------------------------------------------

@permission_or_404(CATALOG_PERMISSION)
@require_http_methods(["GET", "HEAD"])
def manage_changes(request: HttpRequest) -> HttpResponse:
    """Changes that lower protection, waiting for a second admin; and recent decisions."""
    return render(request, "tiers/manage/changes.html", {
        "pending": policy_changes.pending_changes(),
        "decided": PolicyChangeRequest.objects.exclude(state=PolicyChangeRequest.State.PENDING)
                   .select_related("tier", "resource", "requested_by", "decided_by")[:20],
    })


@permission_or_404(CATALOG_PERMISSION)
@require_POST
def manage_change_decide(request: HttpRequest, pk: int, verdict: str) -> HttpResponse:
    """Approve (applies it) or reject one change; approving one's own is refused (403)."""
    change = get_object_or_404(PolicyChangeRequest, pk=pk)
    form = DecisionNoteForm(request.POST)
    note = form.cleaned_data["note"] if form.is_valid() else ""
    step = policy_changes.approve if verdict == "approve" else policy_changes.reject
    try:
        change = step(change, request.user, note, origin=Origin.of(request))
    except (policy_changes.SelfApproval, policy_changes.NotAllowed) as exc:
        raise PermissionDenied(str(exc)) from exc
    except policy_changes.PolicyChangeError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Change #{change.pk} to {change.target_name} was {change.state}.")
    return redirect("manage:changes")


# --- manage: policy simulator -------------------------------------------------------------------

@permission_or_404(CATALOG_PERMISSION)
@require_http_methods(["GET", "POST"])
def manage_simulator(request: HttpRequest) -> HttpResponse:
    """Ask the real decision a "what if"; nothing changes but the simulator's own audit event."""
    form = SimulatorForm(request.POST or None)
    simulation = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            resource = load_resource(data["resource"].slug)
            action = Action(ActionKind(data["action_kind"]), ActionClass(data["action_class"]))
            simulation = pages.simulate(
                data["user"], resource, action, zone=data["zone"],
                client_address=data["client_address"] or "", mfa_age=data["mfa_age"],
                has_grant=data["has_grant"], device_trusted=data["device_trusted"],
                one_time_mfa=data["one_time_mfa"], risk_score=data["risk_score"])
            record_request(request, "simulator.run", outcome=str(simulation.decision.outcome),
                           resource=resource.slug, reasons=simulation.decision.reasons_as_data(),
                           detail={"user": data["user"].get_username(), "action": action.kind,
                                   "class": str(action.action_class), "zone": simulation.input.zone.name,
                                   "mfa_age": data["mfa_age"], "has_grant": data["has_grant"],
                                   "device_trusted": data["device_trusted"],
                                   "one_time_mfa": data["one_time_mfa"],
                                   "risk_score": data["risk_score"]})
        else:
            status = 400
    return render(request, "tiers/manage/simulator.html", {
        "form": form, "simulation": simulation,
        "decision": simulation.decision if simulation else None,
        "summary": pages.simulation_summary(simulation) if simulation else [],
    }, status=status)


# --- manage: just-in-time access ----------------------------------------------------------------

@permission_or_404(APPROVE_PERMISSION)
@require_http_methods(["GET", "HEAD"])
def manage_requests(request: HttpRequest) -> HttpResponse:
    """Pending requests to decide, recent decisions, and the grants in force."""
    return render(request, "tiers/manage/requests.html", {
        "pending": _with_durations(jit.pending_requests()),
        "decided": AccessRequest.objects.exclude(state=AccessRequest.State.PENDING)
                   .select_related("requester", "resource__tier", "decided_by")[:20],
        "grants": jit.active_grants(),
        "note_form": DecisionNoteForm(),
    })


@permission_or_404(APPROVE_PERMISSION)
@require_POST
def manage_request_decide(request: HttpRequest, pk: int, verdict: str) -> HttpResponse:
    """Approve or deny one request; one's own request is refused with the reason (403)."""
    access_request = get_object_or_404(AccessRequest.objects.select_related("resource", "requester"),
                                       pk=pk)
    form = DecisionNoteForm(request.POST)
    note = form.cleaned_data["note"] if form.is_valid() else ""
    step = jit.approve if verdict == "approve" else jit.deny
    try:
        step(access_request, request.user, note, origin=Origin.of(request))
    except (jit.SelfDecision, jit.NotApprover) as exc:
        raise PermissionDenied(str(exc)) from exc
    except jit.JitError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{access_request.requester.get_username()}'s request for "
                                  f"{access_request.resource.name} was {access_request.state}.")
    return redirect("manage:requests")


@permission_or_404(APPROVE_PERMISSION)
@require_POST
def manage_grant_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """End a grant now."""
    grant = get_object_or_404(AccessGrant.objects.select_related("resource", "user"), pk=pk)
    try:
        jit.revoke(grant, request.user, origin=Origin.of(request))
    except jit.NotApprover as exc:
        raise PermissionDenied(str(exc)) from exc
    except jit.JitError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{grant.user.get_username()}'s access to {grant.resource.name} "
                                  "was revoked.")
    return redirect("manage:requests")
