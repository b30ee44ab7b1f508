"""Why the step-up page asks for a code: only sentences the portal itself produced.

The page is reached by a link, so its ``?reason=`` is attacker-controlled: shown verbatim it
would let anyone put their words ("your account is compromised, call ...") on a genuine portal
page. The page therefore accepts a known reason *code* (``mfa_per_action``, ``mfa_stale``),
or one of the two sentences the decision writes for a step-up (``tiers/decision.py``), taken
apart into a known action class and a duration and written again from our own words.
Anything else falls back to the generic sentence. A tier that narrows the second factors
adds "Accepted here: a passkey." to those sentences; :func:`step_up_ask` reads that back as
a set of factors, so the page can offer the right one and refuse a code that would not count
(the decision refuses it again anyway: the link only shapes the page).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations

from django.utils.translation import gettext as _

from portal.sso.providers import IdentityProvider
from portal.sso.reauth import session_provider
from tiers.types import FACTOR_WORDS, factor_words

__all__ = ["StepUpAsk", "idp_offer", "step_up_ask", "step_up_reason"]

_ACTION_CLASSES = {"read": "read", "write": "write", "sensitive": "sensitive"}
_UNITS = {"s": "s", "min": "min", "h": "h"}
_PER_ACTION = re.compile(r"This (read|write|sensitive) action needs a fresh code for this action alone\.")
_STALE = re.compile(r"This (read|write|sensitive) action needs a code confirmed in the last "
                    r"([1-9][0-9]{0,5}) (s|min|h)\.")


# Each non-empty set of factors as the decision words it ("a passkey or an authenticator app code").
_ACCEPTED = {factor_words(frozenset(c)): frozenset(c) for n in range(1, len(FACTOR_WORDS) + 1)
             for c in combinations(FACTOR_WORDS, n)}
_ACCEPTED_RE = "|".join(re.escape(words) for words in _ACCEPTED)
_PER_ACTION_ONLY = re.compile(r"This (read|write|sensitive) action needs a fresh confirmation for this "
                              rf"action alone\. Accepted here: ({_ACCEPTED_RE})\.")
_STALE_ONLY = re.compile(r"This (read|write|sensitive) action needs a confirmation in the last "
                         rf"([1-9][0-9]{{0,5}}) (s|min|h)\. Accepted here: ({_ACCEPTED_RE})\.")


@dataclass(frozen=True)
class StepUpAsk:
    """What the step-up page says, and which factors count (empty: any)."""

    sentence: str
    accepted: frozenset[str] = frozenset()


def step_up_ask(raw: str | None) -> StepUpAsk:
    """The sentence for ``raw`` and the factors it names as accepted (our words, re-written)."""
    raw = (raw or "").strip()
    if match := _PER_ACTION_ONLY.fullmatch(raw):
        accepted = _ACCEPTED[match.group(2)]
        return StepUpAsk(_("This %(action_class)s action needs a fresh confirmation for this action "
                           "alone. Accepted here: %(factors)s.") % {
            "action_class": _ACTION_CLASSES[match.group(1)], "factors": factor_words(accepted)}, accepted)
    if match := _STALE_ONLY.fullmatch(raw):
        accepted = _ACCEPTED[match.group(4)]
        return StepUpAsk(_("This %(action_class)s action needs a confirmation in the last %(amount)d "
                           "%(unit)s. Accepted here: %(factors)s.") % {
            "action_class": _ACTION_CLASSES[match.group(1)], "amount": int(match.group(2)),
            "unit": _UNITS[match.group(3)], "factors": factor_words(accepted)}, accepted)
    return StepUpAsk(step_up_reason(raw))


def idp_offer(session: object, ask: StepUpAsk) -> tuple[IdentityProvider | None, bool]:
    """(the IdP to confirm at, whether the IdP's MFA was named as not counting).

    Offered only to a session that signed in through that IdP, where the company sign-in's
    MFA counts (the sentence names ``idp``, or names no factors at all).
    """
    provider = session_provider(session)
    if provider is None:
        return None, False
    if ask.accepted and "idp" not in ask.accepted:
        return None, True
    return provider, False


def _per_action(action_class: str) -> str:
    return _("This %(action_class)s action needs a fresh code for this action alone.") % {
        "action_class": _ACTION_CLASSES[action_class]}


def _stale(action_class: str, amount: int, unit: str) -> str:
    return _("This %(action_class)s action needs a code confirmed in the last %(amount)d %(unit)s.") % {
        "action_class": _ACTION_CLASSES[action_class], "amount": amount, "unit": _UNITS[unit]}


def step_up_reason(raw: str | None) -> str:
    """The sentence to show for ``raw`` (a reason code or a decision's sentence), or ""."""
    raw = (raw or "").strip()
    if raw == "mfa_per_action":
        return _("This action needs a fresh code for this action alone.")
    if raw == "mfa_stale":
        return _("This action needs a recently confirmed code.")
    if match := _PER_ACTION.fullmatch(raw):
        return _per_action(match.group(1))
    if match := _STALE.fullmatch(raw):
        return _stale(match.group(1), int(match.group(2)), match.group(3))
    return ""
