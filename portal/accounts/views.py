"""Sign-in, MFA enrolment and verification, backup codes, step-up, sign-out.

Views translate HTTP to the functions in :mod:`portal.accounts.mfa` and
:mod:`portal.accounts.throttle`, and write an audit event for every outcome.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from portal.accounts import mfa
from portal.accounts.forms import PasswordForm, TokenForm
from portal.accounts.inputs import refuse_invalid_input
from portal.accounts.redirects import remember_next, safe_next, take_next
from portal.accounts.signin import (
    check_password,
    codes_wait_message,
    generic_failure_message,
    locked_message,
    wait_message,
)
from portal.accounts.stepup import idp_offer, step_up_ask
from portal.accounts.throttle import LoginThrottle
from portal.audit.chain import record_request
from portal.metrics import SIGN_INS
from portal.passkeys.ceremony import has_passkey
from portal.passkeys.models import PasskeyDevice
from tiers.enforcement import verify_challenge


def _has_second_factor(user: object) -> bool:
    """An authenticator app or a passkey: either makes the password step lead to verification
    (never to a fresh enrolment, which the password alone must not reach)."""
    return mfa.has_confirmed_totp(user) or has_passkey(user)


def _audit(request: HttpRequest, step: str, *, outcome: str, **kwargs: object) -> None:
    """One sign-in step: an audit event and a metric."""
    record_request(request, step, outcome=outcome, **kwargs)
    SIGN_INS.labels(step=step, outcome=outcome).inc()


@login_not_required
@sensitive_post_parameters("password")
@never_cache
@require_http_methods(["GET", "POST"])
@refuse_invalid_input("login.password")
def login_view(request: HttpRequest) -> HttpResponse:
    """Step one: username and password. The answer never says whether the user exists."""
    if request.user.is_authenticated and request.user.is_verified():
        return redirect(safe_next(request, request.GET.get("next")))
    form = PasswordForm(request.POST or None)
    # Offer the browser's saved passkeys in the username field's autofill (conditional UI).
    form.fields["username"].widget.attrs["autocomplete"] = "username webauthn"
    status = 200
    if request.method == "POST" and form.is_valid():
        username = form.cleaned_data["username"]
        throttle = LoginThrottle(username, request.client_address)
        # Reserved before the check, atomically: parallel guesses cannot all slip under the limit.
        if wait := throttle.reserve():
            _audit(request, "login.password", outcome="throttled", actor=username,
                   detail={"retry_after": wait})
            form.add_error(None, wait_message(wait))
            status = 429
        else:
            check = check_password(request, username, form.cleaned_data["password"])
            user = check.user
            if check.locked:
                _audit(request, "login.password", outcome="failure", actor=username,
                       reasons=[{"rule": "account_locked", "message": "The account is locked."}])
                form.add_error(None, locked_message(check.locked_by))
                status = 403
            elif user is None:
                _audit(request, "login.password", outcome="failure", actor=username)
                form.add_error(None, generic_failure_message())
                status = 401
            else:
                throttle.succeeded()
                login(request, user)  # rotates the session key
                _audit(request, "login.password", outcome="success")
                remember_next(request, request.POST.get("next") or request.GET.get("next"))
                if _has_second_factor(user):
                    return redirect("accounts:mfa_verify")
                return redirect("accounts:mfa")
    return render(request, "accounts/login.html",
                  {"form": form, "next": request.GET.get("next", "")}, status=status)


@never_cache
@require_http_methods(["GET", "POST"])
@refuse_invalid_input("mfa.verify")
def mfa_verify_view(request: HttpRequest) -> HttpResponse:
    """Step two on every sign-in: a TOTP code, a backup code, or a passkey."""
    user = request.user
    if not _has_second_factor(user):
        return redirect("accounts:mfa")
    if request.GET.get("next"):
        remember_next(request, request.GET["next"])
    if user.is_verified():
        return redirect(take_next(request))
    form = TokenForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        result = mfa.verify_second_factor(user, form.cleaned_data["otp_token"])
        if result.ok:
            mfa.mark_mfa(request, result.device)
            _audit(request, "mfa.verify", outcome="success",
                           detail={"device": type(result.device).__name__})
            return redirect(take_next(request))
        if result.throttled_for:
            _audit(request, "mfa.verify", outcome="throttled",
                           detail={"retry_after": result.throttled_for})
            form.add_error("otp_token", codes_wait_message(result.throttled_for))
            status = 429
        else:
            _audit(request, "mfa.verify", outcome="failure")
            form.add_error("otp_token", _("That code is not right, or it was already used. "
                                          "Wait for the next code and try again."))
            status = 401
    return render(request, "accounts/mfa_verify.html",
                  {"form": form, "has_passkey": has_passkey(user), "has_totp": mfa.has_confirmed_totp(user)},
                  status=status)


@never_cache
@require_http_methods(["GET", "POST"])
@refuse_invalid_input("mfa.enrol")
def mfa_view(request: HttpRequest) -> HttpResponse:
    """Enrolment on first sign-in (forced); afterwards the MFA status and backup codes."""
    user = request.user
    enrolled = mfa.has_confirmed_totp(user)
    if _has_second_factor(user) and not user.is_verified():
        # Password alone must never be enough to add a second authenticator.
        return redirect("accounts:mfa_verify")
    if enrolled:
        return _mfa_status(request)
    device = mfa.pending_totp_device(user)
    form = TokenForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        result = mfa.confirm_enrolment(user, form.cleaned_data["otp_token"])
        if result.ok:
            mfa.mark_mfa(request, result.device)
            codes = mfa.issue_backup_codes(user)
            _audit(request, "mfa.enrol", outcome="success")
            return render(request, "accounts/backup_codes.html",
                          {"codes": codes, "continue_to": take_next(request), "first_time": True})
        _audit(request, "mfa.enrol", outcome="throttled" if result.throttled_for
                       else "failure")
        form.add_error("otp_token", codes_wait_message(result.throttled_for)
                       if result.throttled_for else
                       _("That code is not right. Check the time on your phone and try the "
                         "current code."))
        status = 429 if result.throttled_for else 400
    return render(request, "accounts/mfa_enrol.html", {
        "form": form, "secret": mfa.totp_secret_base32(device),
        "qr_svg": mfa.provisioning_qr_svg(device), "otpauth_url": device.config_url,
    }, status=status)


def _mfa_status(request: HttpRequest) -> HttpResponse:
    if request.method == "POST" and request.POST.get("action") == "new-backup-codes":
        age = mfa.mfa_age(request)
        if age is None or age > 300:
            return redirect(f"{reverse('accounts:step_up')}?next={reverse('accounts:mfa')}")
        codes = mfa.issue_backup_codes(request.user)
        _audit(request, "mfa.backup_codes", outcome="success")
        return render(request, "accounts/backup_codes.html",
                      {"codes": codes, "continue_to": reverse("accounts:mfa"), "first_time": False})
    age = mfa.mfa_age(request)
    return render(request, "accounts/mfa_status.html", {
        "remaining_codes": mfa.remaining_backup_codes(request.user),
        "mfa_age": None if age is None else int(age),
        "passkeys": PasskeyDevice.objects.filter(user=request.user, confirmed=True),
    })


@never_cache
@require_http_methods(["GET", "POST"])
@refuse_invalid_input("mfa.step_up")
def step_up_view(request: HttpRequest) -> HttpResponse:
    """A fresh second factor for a sensitive action; then back to where the user was."""
    next_url = safe_next(request, request.POST.get("next") or request.GET.get("next"))
    ask = step_up_ask(request.POST.get("reason") or request.GET.get("reason"))
    form = TokenForm(request.POST or None)
    status = 200
    codes_count = not ask.accepted or "totp" in ask.accepted
    if request.method == "POST" and form.is_valid() and not codes_count:
        # Checked before the code, so a code that would not count is not spent either.
        _audit(request, "mfa.step_up", outcome="refused",
               reasons=[{"rule": "factor_not_accepted", "message": ask.sentence}],
               detail={"factor": "totp", "accepted_factors": sorted(ask.accepted)})
        form.add_error("otp_token", _("An authenticator app code does not count here. %(sentence)s")
                       % {"sentence": ask.sentence})
        status = 403
    elif request.method == "POST" and form.is_valid():
        result = mfa.verify_second_factor(request.user, form.cleaned_data["otp_token"])
        if result.ok:
            old_key = request.session.session_key
            mfa.mark_mfa(request, result.device)
            challenge = request.POST.get("challenge") or request.GET.get("challenge")
            armed = verify_challenge(request.user, request.session.session_key, old_key, challenge)
            _audit(request, "mfa.step_up", outcome="success",
                           detail={"next": next_url, "one_time_grant": armed})
            return HttpResponseRedirect(next_url)
        _audit(request, "mfa.step_up",
                       outcome="throttled" if result.throttled_for else "failure")
        form.add_error("otp_token", codes_wait_message(result.throttled_for)
                       if result.throttled_for else
                       _("That code is not right, or it was already used. Wait for the next one."))
        status = 429 if result.throttled_for else 401
    idp, idp_does_not_count = idp_offer(request.session, ask)
    passkey = has_passkey(request.user) and (not ask.accepted or "passkey" in ask.accepted)
    return render(request, "accounts/step_up.html",
                  {"form": form, "next": next_url,
                   "challenge": request.POST.get("challenge") or request.GET.get("challenge", ""),
                   "reason": ask.sentence, "idp": idp, "idp_does_not_count": idp_does_not_count,
                   "no_portal_factor": (codes_count and not passkey and not idp
                                        and not mfa.has_confirmed_totp(request.user)),
                   "codes_count": codes_count, "has_passkey": passkey},
                  status=status)


@login_not_required
@never_cache
def admin_login_view(request: HttpRequest) -> HttpResponse:
    """``/admin/login/`` has no password form of its own: it sends people to the portal's
    sign-in (password, second factor, throttle, audit), and nothing posted here is checked."""
    next_url = safe_next(request, request.GET.get("next"), default=reverse("admin:index"))
    if next_url.startswith(request.path):
        next_url = reverse("admin:index")  # never back here: that would loop
    if request.user.is_authenticated and request.user.is_verified():
        if request.user.is_active and request.user.is_staff:
            return redirect(next_url)
        return render(request, "errors/403.html", {
            "reason": _("The admin site is for portal staff only; this account is not one."),
            "request_id": getattr(request, "request_id", "")}, status=403)
    return redirect(f"{reverse('accounts:login')}?{urlencode({'next': next_url})}")


@login_not_required
@require_http_methods(["GET", "POST"])
def logout_view(request: HttpRequest) -> HttpResponse:
    """Sign out on POST (a GET only asks, so a link elsewhere cannot sign you out)."""
    if request.method == "POST":
        logout(request)
        messages.info(request, "You are signed out.")
        return redirect("accounts:login")
    if not request.user.is_authenticated:
        return redirect("accounts:login")
    return render(request, "accounts/logout.html")


__all__ = ["admin_login_view", "login_view", "logout_view", "mfa_verify_view", "mfa_view", "step_up_view"]
