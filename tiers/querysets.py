"""Authorization of lists: what a user may see is a queryset, the rest answers 404."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Q, QuerySet

from tiers.models import Resource

__all__ = ["visible_to"]


def visible_to(user: AbstractBaseUser) -> QuerySet[Resource]:
    """Resources shared with ``user`` directly or through one of their groups."""
    if not user.is_authenticated:
        return Resource.objects.none()
    return (Resource.objects.filter(Q(allowed_users=user) | Q(allowed_groups__in=user.groups.all()))
            .distinct().select_related("tier")
            .prefetch_related("tier__allowed_zones", "allowed_groups", "allowed_users", "action_rules"))
