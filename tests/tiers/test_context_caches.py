"""The per-request shortcuts in tiers: parsed action rules, remembered zones, counted decisions.

Each must answer exactly as the slow way did, and see a catalog change on the next call.
"""

from __future__ import annotations

import fnmatch

import pytest
from prometheus_client import REGISTRY

from tests.tiers.factories import NetworkZoneFactory, ResourceFactory
from tiers import context
from tiers.context import (
    classify,
    classify_compiled,
    compile_action_rules,
    resolve_zone,
    resolve_zone_in_memory,
    zone_table,
)
from tiers.enforcement import _count_decision
from tiers.models import ActionRule, NetworkZone
from tiers.types import ActionClass, ZoneInfo

pytestmark = pytest.mark.django_db

RULES = (("post, put", "/admin/*", "sensitive"), ("*", "/admin/*", "write"), ("get", "/api/[ab]?", "write"),
         ("DELETE", "*", "sensitive"), (" , ", "*", "sensitive"), ("*", "/Case", "sensitive"))
REQUESTS = [(m, p) for m in ("GET", "get", "HEAD", "OPTIONS", "POST", "Put", "PATCH", "DELETE")
            for p in ("/", "/admin/x", "/admin", "/api/a1", "/api/c1", "/api/ab", "/case", "/Case")]


def _classify_as_before(rules: list[ActionRule], method: str, path: str) -> ActionClass:
    """The rule matching as it was written before the rules were compiled."""
    method = method.upper()
    for rule in rules:
        methods = {m.strip().upper() for m in rule.methods.split(",") if m.strip()}
        if ("*" in methods or method in methods) and fnmatch.fnmatchcase(path, rule.path):
            return ActionClass(rule.action_class)
    return ActionClass.READ if method in {"GET", "HEAD", "OPTIONS"} else ActionClass.WRITE


def test_compiled_rules_classify_every_request_as_the_rules_do():
    # Case-sensitive matching is the old behaviour exactly (an app that routes by case opts in).
    resource = ResourceFactory(slug="rules", paths_case_sensitive=True)
    for order, (methods, path, action_class) in enumerate(RULES):
        ActionRule.objects.create(resource=resource, order=order, methods=methods, path=path,
                                  action_class=action_class)
    rows = list(resource.action_rules.all())
    compiled = compile_action_rules(resource)
    for method, path in REQUESTS:
        expected = _classify_as_before(rows, method, path)
        assert classify(resource, method, path) is expected, (method, path)
        assert classify_compiled(compiled, method, path) is expected, (method, path)


def test_no_rules_classify_by_method():
    assert classify_compiled((), "get", "/x") is ActionClass.READ
    assert classify_compiled((), "PATCH", "/x") is ActionClass.WRITE


def test_remembered_zones_answer_as_resolve_zone_and_follow_a_zone_change():
    office = NetworkZoneFactory(name="office", cidrs="10.8.0.0/16")
    NetworkZoneFactory(name="desk", cidrs="10.8.3.0/24", trusted=False)
    zone_table.clear()
    zone_table.get()
    for address in ("10.8.3.4", "10.8.9.9", "192.0.2.1", "::1", "not-an-ip"):
        assert resolve_zone_in_memory(address) == resolve_zone(address), address
        assert resolve_zone_in_memory(address) == resolve_zone(address), address  # remembered
    assert resolve_zone_in_memory("10.8.9.9") == ZoneInfo("office", True, "10.8.9.9")

    office.cidrs = "172.16.0.0/12"
    office.save()  # clears the table: memory must not answer from the old one
    assert resolve_zone_in_memory("10.8.9.9") is None
    zone_table.get()
    assert resolve_zone_in_memory("10.8.9.9") == ZoneInfo(address="10.8.9.9")
    assert resolve_zone_in_memory("172.16.0.1") == ZoneInfo("office", True, "172.16.0.1")

    NetworkZone.objects.filter(name="desk").delete()  # a queryset delete sends post_delete too
    zone_table.get()
    assert resolve_zone_in_memory("10.8.3.4") == ZoneInfo(address="10.8.3.4")


def test_remembered_zones_stay_bounded(monkeypatch):
    monkeypatch.setattr(context, "_ZONE_MEMO_SIZE", 4)
    NetworkZoneFactory(name="office", cidrs="10.8.0.0/16")
    zone_table.clear()
    zone_table.get()
    for n in range(10):
        assert resolve_zone_in_memory(f"10.8.0.{n}") == ZoneInfo("office", True, f"10.8.0.{n}")
    assert len(context._zone_memo._state[1]) <= 4


def test_a_counted_decision_lands_on_its_labels():
    labels = {"outcome": "allow", "tier": "t-count", "action": "http"}
    before = REGISTRY.get_sample_value("portal_decisions_total", labels) or 0.0
    for _ in range(3):
        _count_decision("allow", "t-count", "http")
    assert REGISTRY.get_sample_value("portal_decisions_total", labels) == before + 3
