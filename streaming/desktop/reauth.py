"""Deciding a live session again, and what the tunnel must do about the answer.

Runs in a worker thread (it reads the database). The portal session is loaded afresh each
time, so signing out anywhere, an expired session or a newer MFA are all seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.models import Device

from streaming.desktop.access import decide_continue
from streaming.desktop.models import EndReason, StreamSession
from streaming.desktop.signins import current_session

__all__ = ["FIXED_OBLIGATIONS", "LIVE_OBLIGATIONS", "Verdict", "reauthorize", "reauthorize_watcher",
           "second_factor_holds"]

# Set in guacd at the handshake; a change needs a new session.
FIXED_OBLIGATIONS = ("record", "read_only", "watermark")
# Checked by the relay on each attempt; a change applies at once.
LIVE_OBLIGATIONS = ("clipboard_in", "clipboard_out", "file_transfer", "idle_seconds", "session_max_seconds")


@dataclass(frozen=True)
class Verdict:
    """``go_on``, ``step_up`` (hold input, ask for a code) or ``end`` (with reason and message)."""

    outcome: str
    reason: EndReason = EndReason.REVOKED
    message: str = ""
    obligations: dict[str, Any] = field(default_factory=dict)
    session_key: str = ""  # the key the portal session lives under now (a step-up rotates it)


def second_factor_holds(user: Any, session: Any) -> bool:
    """The device that verified this sign-in still exists, confirmed and the user's own: as
    django-otp's middleware judges a page request, so removing it ends the desktop too."""
    persistent_id = session.get(DEVICE_ID_SESSION_KEY)
    device = Device.from_persistent_id(persistent_id) if persistent_id else None
    return device is not None and device.user_id == user.pk and bool(device.confirmed)


def reauthorize(user_id: int, session_key: str, client_address: str, resource_id: int,
                obligations: dict[str, Any], sign_in: str = "") -> Verdict:
    """Decide ``desktop.continue`` for this user, portal session and resource, now."""
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        return Verdict("end", EndReason.REVOKED, "Your account no longer exists.")
    session_key, session = current_session(user, session_key, sign_in)
    signed_in = bool(session_key) and session.exists(session_key) and session.get(DEVICE_ID_SESSION_KEY)
    # A lock also ends the web sessions: say "locked" (the decision's reason), not "signed out".
    if not signed_in and user.is_active:
        return Verdict("end", EndReason.SIGNED_OUT,
                       "You signed out of the portal (or your sign-in expired), so the desktop closed.")
    if user.is_active and not second_factor_holds(user, session):
        return Verdict("end", EndReason.REVOKED, "The second factor you signed in with was removed, so "
                       "the desktop closed. Sign in again to go on.")
    result = decide_continue(user, session, client_address, resource_id)
    if result is None:
        return Verdict("end", EndReason.REVOKED, "This desktop was removed from the catalog.")
    decision, _resource = result
    if decision.outcome == "step_up":
        reason = decision.denial
        return Verdict("step_up", message=reason.message if reason else "A fresh code is needed.",
                       session_key=session_key)
    if not decision.allowed:
        reason = decision.denial
        message = reason.message if reason else "Access was withdrawn."
        return Verdict("end", EndReason.REVOKED, f"Access ended: {message}")
    changed = [k for k in FIXED_OBLIGATIONS if bool(decision.obligations.get(k)) != bool(obligations.get(k))]
    if changed:
        return Verdict("end", EndReason.REVOKED,
                       "The rules for this desktop changed (" + ", ".join(changed).replace("_", " ")
                       + "). Open it again to go on under the new rules.")
    return Verdict("go_on", obligations={k: decision.obligations[k] for k in LIVE_OBLIGATIONS
                                         if k in decision.obligations}, session_key=session_key)


def reauthorize_watcher(user_id: int, session_key: str, stream_id: Any = None, sign_in: str = "") -> Verdict:
    """An admin's read-only view goes on while they are signed in and still manage sessions,
    and while the watched session is live."""
    if stream_id is not None and not StreamSession.objects.filter(
            pk=stream_id, state=StreamSession.State.LIVE).exists():
        return Verdict("end", EndReason.TARGET_CLOSED, "The session you were watching has ended.")
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return Verdict("end", EndReason.REVOKED, "Your account is locked or no longer exists.")
    session_key, session = current_session(user, session_key, sign_in)
    if not (bool(session_key) and session.exists(session_key) and session.get(DEVICE_ID_SESSION_KEY)):
        return Verdict("end", EndReason.SIGNED_OUT,
                       "You signed out of the portal (or your sign-in expired), so the view closed.")
    if not user.has_perm("accounts.manage_sessions"):
        return Verdict("end", EndReason.REVOKED, "You may no longer watch live sessions.")
    return Verdict("go_on", session_key=session_key)
