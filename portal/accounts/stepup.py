"""Why the step-up page asks for a code: only sentences the portal itself produced.

The page is reached by a link, so its ``?reason=`` is attacker-controlled: shown verbatim it
would let anyone put their words ("your account is compromised, call ...") on a genuine portal
page. The page therefore accepts a known reason *code* (``mfa_per_action``, ``mfa_stale``),
or one of the two sentences the decision writes for a step-up (``tiers/decision.py``), taken
apart into a known action class and a duration and written again from our own words.
Anything else falls back to the generic sentence.
"""

from __future__ import annotations

import re

from django.utils.translation import gettext as _

__all__ = ["step_up_reason"]

_ACTION_CLASSES = {"read": "read", "write": "write", "sensitive": "sensitive"}
_UNITS = {"s": "s", "min": "min", "h": "h"}
_PER_ACTION = re.compile(r"This (read|write|sensitive) action needs a fresh code for this action alone\.")
_STALE = re.compile(r"This (read|write|sensitive) action needs a code confirmed in the last "
                    r"([1-9][0-9]{0,5}) (s|min|h)\.")


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
