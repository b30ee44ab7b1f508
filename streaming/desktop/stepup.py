"""The in-session step-up of a live desktop: which second factors count, and what a passkey signs.

The tunnel holds input (or refuses a clipboard or file stream) when the live decision asks
for a fresh confirmation; the page asks the person, and the answer comes to one endpoint
(``streaming.desktop.views.step_up_view``). The rules it needs are here, as plain functions:

- which factors the tier accepts for the action the tunnel asked about (going on is a read
  action, a clipboard or file stream a sensitive one: :mod:`streaming.desktop.access`);
- the sentence that refuses a code where only passkeys count (the decision refuses it again
  at the next re-check anyway; saying it at once spares the person a useless code);
- the passkey's binding: the digest of this session, its owner, its resource and the action.
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser

from portal.passkeys.binding import DesktopAction
from streaming.desktop.access import CONTINUE, control_action
from streaming.desktop.models import StreamSession
from tiers.context import tier_policy
from tiers.models import Tier
from tiers.types import ActionClass, Factor, factor_words

__all__ = ["DESKTOP_ACTIONS", "accepted_factors", "binding_for", "code_refusal", "desktop_action"]

# The actions a desktop's step-up can be for, and their class in the decision.
_CONTROLS = ("clipboard.in", "clipboard.out", "file.transfer")
DESKTOP_ACTIONS: dict[str, ActionClass] = {
    CONTINUE.kind: CONTINUE.action_class, **{kind: control_action(kind).action_class for kind in _CONTROLS},
}


def desktop_action(raw: object) -> str:
    """The action the page names, or ``desktop.continue`` when it names none we know."""
    return raw if isinstance(raw, str) and raw in DESKTOP_ACTIONS else CONTINUE.kind


def accepted_factors(tier: Tier, action: str) -> frozenset[str]:
    """The factors ``tier`` accepts for ``action`` (empty: any second factor counts)."""
    return tier_policy(tier).factors_for(DESKTOP_ACTIONS[desktop_action(action)])


def code_refusal(accepted: frozenset[str]) -> str:
    """The sentence refusing a code where codes do not count, or "" where they do."""
    if not accepted or Factor.TOTP in accepted:
        return ""
    return f"An authenticator app code does not count here. Accepted here: {factor_words(accepted)}."


def binding_for(stream: StreamSession, user: AbstractBaseUser, action: str) -> DesktopAction:
    """What a passkey confirming ``action`` in this live session signs."""
    return DesktopAction(str(stream.pk), user.pk, stream.resource.slug, desktop_action(action))
