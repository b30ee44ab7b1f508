"""Sign-in, MFA enrolment and verification, backup codes, step-up, sign-out.

Views translate HTTP to the functions in :mod:`portal.accounts.mfa` and
:mod:`portal.accounts.throttle`, and write an audit event for every outcome.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import authenticate, login, logout
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from portal.accounts import mfa
from portal.accounts.forms import PasswordForm, TokenForm
from portal.accounts.redirects import remember_next, safe_next, take_next
from portal.accounts.throttle import LoginThrottle
from portal.audit.chain import record_request
from portal.metrics import SIGN_INS
from tiers.enforcement import verify_challenge


def _audit(request: HttpRequest, step: str, *, outcome: str, **kwargs: object) -> None:
    """One sign-in step: an audit event and a metric."""
    record_request(request, step, outcome=outcome, **kwargs)
    SIGN_INS.labels(step=step, outcome=outcome).inc()


GENERIC_LOGIN_ERROR = "The username or password is not right. Check both and try again."


def _wait_message(seconds: int) -> str:
    return (f"Too many failed attempts. For your account's safety, sign-in is paused: "
            f"try again in {seconds} seconds.")


@login_not_required
@sensitive_post_parameters("password")
@never_cache
@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    """Step one: username and password. The answer never says whether the user exists."""
    if request.user.is_authenticated and request.user.is_verified():
        return redirect(safe_next(request, request.GET.get("next")))
    form = PasswordForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        username = form.cleaned_data["username"]
        throttle = LoginThrottle(username, request.client_address)
        if wait := throttle.retry_after():
            _audit(request, "login.password", outcome="throttled", actor=username,
                           detail={"retry_after": wait})
            form.add_error(None, _wait_message(wait))
            status = 429
        else:
            user = authenticate(request, username=username, password=form.cleaned_data["password"])
            if user is None:
                throttle.failed()
                _audit(request, "login.password", outcome="failure", actor=username)
                form.add_error(None, GENERIC_LOGIN_ERROR)
                status = 401
            else:
                throttle.succeeded()
                login(request, user)  # rotates the session key
                _audit(request, "login.password", outcome="success")
                remember_next(request, request.POST.get("next") or request.GET.get("next"))
                if mfa.has_confirmed_totp(user):
                    return redirect("accounts:mfa_verify")
                return redirect("accounts:mfa")
    return render(request, "accounts/login.html",
                  {"form": form, "next": request.GET.get("next", "")}, status=status)


@never_cache
@require_http_methods(["GET", "POST"])
def mfa_verify_view(request: HttpRequest) -> HttpResponse:
    """Step two on every sign-in: a TOTP code or a backup code."""
    user = request.user
    if not mfa.has_confirmed_totp(user):
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
            form.add_error("otp_token", f"Too many wrong codes. Wait {result.throttled_for} "
                                        "seconds, then enter a new code.")
            status = 429
        else:
            _audit(request, "mfa.verify", outcome="failure")
            form.add_error("otp_token", "That code is not right, or it was already used. "
                                        "Wait for the next code and try again.")
            status = 401
    return render(request, "accounts/mfa_verify.html", {"form": form}, status=status)


@never_cache
@require_http_methods(["GET", "POST"])
def mfa_view(request: HttpRequest) -> HttpResponse:
    """Enrolment on first sign-in (forced); afterwards the MFA status and backup codes."""
    user = request.user
    enrolled = mfa.has_confirmed_totp(user)
    if enrolled and not user.is_verified():
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
        form.add_error("otp_token", f"Too many wrong codes. Wait {result.throttled_for} seconds."
                       if result.throttled_for else
                       "That code is not right. Check the time on your phone and try the "
                       "current code.")
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
    return render(request, "accounts/mfa_status.html", {
        "remaining_codes": mfa.remaining_backup_codes(request.user),
        "mfa_age": mfa.mfa_age(request),
    })


@never_cache
@require_http_methods(["GET", "POST"])
def step_up_view(request: HttpRequest) -> HttpResponse:
    """A fresh second factor for a sensitive action; then back to where the user was."""
    next_url = safe_next(request, request.POST.get("next") or request.GET.get("next"))
    form = TokenForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
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
        form.add_error("otp_token", f"Too many wrong codes. Wait {result.throttled_for} seconds."
                       if result.throttled_for else
                       "That code is not right, or it was already used. Wait for the next one.")
        status = 429 if result.throttled_for else 401
    return render(request, "accounts/step_up.html",
                  {"form": form, "next": next_url,
                   "challenge": request.POST.get("challenge") or request.GET.get("challenge", ""),
                   "reason": request.GET.get("reason", "")}, status=status)


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


__all__ = ["login_view", "logout_view", "mfa_verify_view", "mfa_view", "step_up_view"]
