"""Filters of the tiers list pages, declared with django-filter (as NetBox does): each filter
is one line, the form and the query come from it, and a bad value filters nothing rather
than failing the page."""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from tiers.models import Resource, ResourceKind, Tier

__all__ = ["ResourceFilterSet"]


class ResourceFilterSet(django_filters.FilterSet):
    """Narrow the admin's resource list by tier, kind and free text (GET)."""

    tier = django_filters.ModelChoiceFilter(queryset=Tier.objects.all(), to_field_name="name",
                                            label="Show tier", empty_label="All tiers")
    kind = django_filters.ChoiceFilter(choices=ResourceKind.choices, empty_label="All kinds")
    q = django_filters.CharFilter(method="search", label="Name, slug or description", max_length=100,
                                  widget=forms.TextInput(attrs={"placeholder": "e.g. wiki"}))

    class Meta:
        model = Resource
        fields = ["tier", "kind", "q"]

    def search(self, queryset: QuerySet[Resource], name: str, value: str) -> QuerySet[Resource]:
        return queryset.filter(Q(slug__icontains=value) | Q(name__icontains=value)
                               | Q(description__icontains=value))

    @classmethod
    def for_admin(cls, query: object) -> ResourceFilterSet:
        """The filters of the Manage resources page over every resource, by tier then name."""
        return cls(query or None, queryset=Resource.objects.select_related("tier")
                   .order_by("tier__rank", "name"))
