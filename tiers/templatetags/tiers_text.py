"""``{{ reason.message|translated }}``: a decision's sentence in the reader's language."""

from __future__ import annotations

from django import template

from tiers.pages import translated as _translated

register = template.Library()

__all__ = ["register", "translated"]


@register.filter
def translated(text: object) -> str:
    """See :func:`tiers.pages.translated` (the template translated first, then formatted)."""
    return _translated(text)
