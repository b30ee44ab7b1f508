"""``{% desktop_step_up user tier as ask %}``: what the desktop page's step-up dialog offers.

The desktop page is rendered once, and its dialog opens later for going on (a read action)
or for a clipboard or file stream (sensitive): both answers are written into the page so the
dialog can show the passkey alone where codes do not count, with the sentence naming what does.
"""

from __future__ import annotations

from django import template
from django.contrib.auth.base_user import AbstractBaseUser

from portal.passkeys.ceremony import has_passkey
from streaming.desktop import stepup
from tiers.models import Tier

register = template.Library()


@register.simple_tag
def desktop_step_up(user: AbstractBaseUser, tier: Tier) -> dict[str, object]:
    """``has_passkey``, and ``refuse_read`` / ``refuse_sensitive``: the sentence refusing a code
    for that kind of action ("" where codes count)."""
    return {
        "has_passkey": has_passkey(user),
        "refuse_read": stepup.code_refusal(stepup.accepted_factors(tier, "desktop.continue")),
        "refuse_sensitive": stepup.code_refusal(stepup.accepted_factors(tier, "clipboard.in")),
    }
