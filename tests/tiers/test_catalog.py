"""Catalog as code: apply is all or nothing, errors name file:line and path, export round-trips."""

from __future__ import annotations

import textwrap
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import ManagementUtility, call_command
from django.core.management.base import CommandError

from portal.accounts.roles import ensure_roles
from portal.audit.models import AuditEvent
from tests.factories import UserFactory
from tests.tiers.factories import client_for, person
from tiers.catalog import (
    MAX_BYTES,
    CatalogError,
    apply_catalog,
    export_catalog,
    load_catalog,
    upstream_problem,
)
from tiers.models import ActionRule, NetworkZone, PolicyChangeRequest, Resource, Tier, TierChange
from tiers.policy_changes import approve
from tiers.querysets import visible_to

pytestmark = pytest.mark.django_db

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "catalog.yaml"

BASE = """\
tiers:
  - name: low
    rank: 10
    mfa: {write: 3600, sensitive: 0}
  - name: high
    rank: 20
    access_mode: stream
    mfa: {read: 900}
    recording: true
  - name: critical
    rank: 30
    access_mode: stream
resources:
  - slug: wiki
    name: Wiki
    kind: web
    upstream: https://wiki.internal
    tier: low
    groups: [employee]
"""


@pytest.fixture(autouse=True)
def roles():
    return ensure_roles()


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def apply_text(text: str, *, dry_run: bool = False):
    return apply_catalog(load_catalog(text, source="catalog.yaml"), dry_run=dry_run)


def problems_of(text: str | bytes) -> list[str]:
    with pytest.raises(CatalogError) as excinfo:
        load_catalog(text, source="catalog.yaml")
    return [str(p) for p in excinfo.value.problems]


def snapshot() -> dict[str, object]:
    """Everything an apply could touch: row counts and the exported catalog itself."""
    counts = {model.__name__: model.objects.count()
              for model in (NetworkZone, Tier, Resource, ActionRule, TierChange, AuditEvent)}
    return {**counts, "export": export_catalog()}


def run_command(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("catalog", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- applying -------------------------------------------------------------------------------------


def test_apply_creates_zones_tiers_and_resources_from_the_example():
    changes = apply_text(EXAMPLE.read_text())

    assert {(c.kind, c.verb) for c in changes} == {("zone", "create"), ("tier", "create"),
                                                   ("resource", "create")}
    assert list(Tier.objects.values_list("name", flat=True)) == ["low", "high", "critical"]
    low, high, critical = Tier.objects.all()
    assert (low.access_mode, low.mfa_read, low.mfa_write, low.mfa_sensitive) == ("proxy", None, 3600, 0)
    assert (high.access_mode, high.mfa_read, high.recording, high.clipboard_in) == (
        "stream", 900, True, "deny")
    assert (critical.mfa_read, critical.mfa_write, critical.mfa_sensitive) == (0, 0, 0)
    assert critical.approval_required and critical.recording and critical.watermark and critical.read_only
    assert sorted(critical.allowed_zones.values_list("name", flat=True)) == ["office", "vpn"]
    office = NetworkZone.objects.get(name="office")
    assert office.trusted and [str(n) for n in office.networks()] == ["10.20.0.0/16", "2001:db8:20::/48"]
    wiki = Resource.objects.get(slug="wiki")
    assert (wiki.kind, wiki.upstream, wiki.tier.name) == ("web", "http://127.0.0.1:8081", "low")
    assert sorted(wiki.allowed_groups.values_list("name", flat=True)) == ["admin", "employee"]
    assert [(r.order, r.methods, r.path, r.action_class) for r in wiki.action_rules.all()] == [
        (0, "POST,PUT,PATCH", "/edit/*", "write"),
        (1, "POST,DELETE", "/admin/*", "sensitive"),
        (2, "*", "/api/export*", "sensitive"),
    ]
    assert AuditEvent.objects.filter(action="catalog.apply").count() == len(changes)
    # A new resource's first tier is the start of its tier history.
    assert set(TierChange.objects.values_list("resource__slug", "from_tier", "to_tier", "changed_by")) == {
        ("wiki", "", "low", "catalog"), ("ops-desktop", "", "high", "catalog"),
        ("prod-shell", "", "critical", "catalog")}


def test_reapplying_the_same_file_changes_nothing():
    apply_text(EXAMPLE.read_text())
    before = snapshot()

    assert apply_text(EXAMPLE.read_text()) == ()
    assert snapshot() == before


def test_export_then_apply_is_a_no_op():
    apply_text(EXAMPLE.read_text())
    exported = export_catalog()
    before = snapshot()

    assert apply_text(exported) == ()
    assert snapshot() == before
    assert export_catalog() == exported


def test_export_round_trips_objects_made_outside_the_catalog(roles):
    zone = NetworkZone.objects.create(name="lab", cidrs="192.168.5.0/24, 192.168.6.0/24", trusted=False)
    tier = Tier.objects.create(name="odd", rank=5, description='yes: "quoted" # not a comment',
                               mfa_read=60, rate_limit_per_minute=10)
    tier.allowed_zones.add(zone)
    resource = Resource.objects.create(slug="legacy", name="on", kind="rdp", upstream="[::1]:3389",
                                       tier=tier)
    resource.allowed_groups.add(roles["admin"])
    resource.allowed_users.add(UserFactory(username="dana"))
    ActionRule.objects.create(resource=resource, order=0, methods="*", path="/x", action_class="read")
    before = snapshot()

    assert apply_text(export_catalog()) == ()
    assert snapshot() == before


def test_items_absent_from_the_file_are_left_alone():
    apply_text(EXAMPLE.read_text())
    before = snapshot()

    assert apply_text("tiers: []\nresources:\n") == ()
    assert snapshot() == before


def test_a_retag_writes_a_tier_change_and_a_retag_audit_event():
    # high asks for a write code too, so the move raises protection and applies at once.
    base = BASE.replace("    mfa: {read: 900}\n", "    mfa: {read: 900, write: 600}\n")
    apply_text(base)
    events_before = AuditEvent.objects.count()

    changes = apply_text(base.replace("    tier: low\n", "    tier: high\n"))

    assert [str(c) for c in changes] == ["update resource wiki: tier: 'low' -> 'high'"]
    change = TierChange.objects.get(resource__slug="wiki", from_tier="low")
    assert (change.to_tier, change.changed_by) == ("high", "catalog")
    retag = AuditEvent.objects.get(action="catalog.retag")
    assert (retag.outcome, retag.actor, retag.resource, retag.detail) == (
        "success", "catalog", "wiki", {"from": "low", "to": "high"})
    applied = AuditEvent.objects.filter(action="catalog.apply").order_by("-seq").first()
    assert applied.detail["fields"] == {"tier": {"from": "low", "to": "high"}}
    assert AuditEvent.objects.count() == events_before + 2
    assert Resource.objects.get(slug="wiki").tier.name == "high"


def test_an_update_writes_one_event_naming_what_changed():
    apply_text(BASE)
    before = snapshot()

    changes = apply_text(BASE.replace("    mfa: {read: 900}\n", "    mfa: {read: 300}\n"))

    assert [c.name for c in changes] == ["high"]
    event = AuditEvent.objects.order_by("-seq").first()
    assert (event.action, event.actor, event.detail["kind"], event.detail["change"]) == (
        "catalog.apply", "catalog", "tier", "update")
    assert event.detail["fields"] == {"mfa": {"from": {"read": 900, "write": None, "sensitive": 0},
                                              "to": {"read": 300, "write": None, "sensitive": 0}}}
    assert AuditEvent.objects.count() == before["AuditEvent"] + 1
    assert TierChange.objects.count() == before["TierChange"]


def test_listed_items_are_described_completely_so_a_removed_key_returns_to_its_default():
    apply_text(BASE)
    apply_text(BASE.replace("    recording: true\n", ""))
    # Turning recording off lowers protection: it applies once a second admin approves it.
    approve(PolicyChangeRequest.objects.get(), UserFactory(username="bob", role="admin"))

    assert Tier.objects.get(name="high").recording is False


def test_a_low_tier_resource_shared_with_employees_is_visible_to_an_employee(employee):
    apply_text(BASE)

    assert list(visible_to(employee).values_list("slug", flat=True)) == ["wiki"]


def test_a_resource_shared_with_a_user_is_visible_to_that_user_only():
    dana = UserFactory(username="dana", role="auditor")
    erin = UserFactory(username="erin2", role="auditor")
    apply_text(BASE.replace("    groups: [employee]\n", "    users: [dana]\n"))

    assert list(visible_to(dana).values_list("slug", flat=True)) == ["wiki"]
    assert not visible_to(erin).exists()


def test_a_dry_run_reports_the_changes_and_writes_nothing():
    before = snapshot()

    changes = apply_text(BASE, dry_run=True)

    assert [(c.kind, c.name, c.verb) for c in changes] == [
        ("tier", "low", "create"), ("tier", "high", "create"), ("tier", "critical", "create"),
        ("resource", "wiki", "create")]
    assert snapshot() == before


def test_a_resource_may_use_a_tier_that_already_exists_but_is_not_in_the_file():
    apply_text(BASE)
    apply_text(dedent("""
        resources:
          - {slug: crm, name: CRM, kind: web, upstream: "http://crm.internal:8080/app", tier: high}
    """))

    assert Resource.objects.get(slug="crm").tier.name == "high"


# --- bad input: named by file:line and path, nothing applied -----------------------------------


def test_an_unknown_tier_is_named_with_line_path_and_the_known_tiers():
    text = dedent("""
        tiers:
          - {name: low, rank: 10}
          - {name: high, rank: 20, access_mode: stream}
          - {name: critical, rank: 30, access_mode: stream}
        resources:
          - {slug: wiki, name: Wiki, kind: web, upstream: "http://wiki.internal", tier: low}
          - {slug: crm, name: CRM, kind: web, upstream: "http://crm.internal", tier: low}
          - slug: hr
            name: HR
            kind: web
            upstream: http://hr.internal
            groups: [employee]
            # line 14 names the tier
            tier: hgih
    """)

    assert problems_of(text) == [
        "catalog.yaml:14: resources[2].tier: unknown tier 'hgih' (known: low, high, critical)"]


BAD_INPUTS = [
    pytest.param(
        "tiers:\n  - name: low\n    mfa: {read: 60, writ: 10}\n",
        "catalog.yaml:3: tiers[0].mfa.writ: unknown key 'writ' (did you mean 'write'?)",
        id="unknown-key"),
    pytest.param(
        "tiers:\n  - name: low\n    colour: red\n",
        "catalog.yaml:3: tiers[0].colour: unknown key 'colour' (allowed: name, rank,",
        id="unknown-key-no-close-match"),
    pytest.param(
        "widgets: []\n",
        "catalog.yaml:1: widgets: unknown key 'widgets' (allowed: zones, tiers, resources)",
        id="unknown-top-level-key"),
    pytest.param(
        "tiers:\n  - name: low\n    rank: ten\n",
        "catalog.yaml:3: tiers[0].rank: expected an integer, got a string ('ten')",
        id="wrong-type-integer"),
    pytest.param(
        "tiers:\n  - name: low\n    approval_required: maybe\n",
        "catalog.yaml:3: tiers[0].approval_required: expected true or false, got a string ('maybe')",
        id="wrong-type-boolean"),
    pytest.param(
        "tiers:\n  - name: low\n    mfa: {read: 15m}\n",
        "catalog.yaml:3: tiers[0].mfa.read: expected an integer (seconds) or null, got a string ('15m')",
        id="wrong-type-seconds"),
    pytest.param(
        "tiers:\n  - name: low\n    idle_seconds: -5\n",
        "catalog.yaml:3: tiers[0].idle_seconds: must be between 1 and 2147483647, got -5",
        id="negative-seconds"),
    pytest.param(
        "tiers:\n  - name: low\n    file_transfer: sometimes\n",
        "catalog.yaml:3: tiers[0].file_transfer: 'sometimes' is not one of allow, step_up, deny",
        id="bad-choice"),
    pytest.param(
        "tiers:\n  - name: low\n    recording: true\n",
        "catalog.yaml:3: tiers[0].recording: only applies to pixel-streamed tiers (access_mode: stream)",
        id="proxy-tier-cannot-record"),
    pytest.param(
        "tiers:\n  - name: low\n    rank: 40000\n",
        "catalog.yaml:3: tiers[0].rank: must be between 0 and 32767, got 40000",
        id="rank-out-of-range"),
    pytest.param(
        "tiers:\n  - name: low\n    accepted_factors: {sensitive: [sms]}\n",
        "catalog.yaml:3: tiers[0].accepted_factors.sensitive[0]: 'sms' is not one of totp, passkey",
        id="unknown-factor"),
    pytest.param(
        "tiers:\n  - name: low\n    accepted_factors: {sensitve: [passkey]}\n",
        "catalog.yaml:3: tiers[0].accepted_factors.sensitve: unknown key 'sensitve' (did you mean 'sensitive'?)",
        id="unknown-action-class"),
    pytest.param(
        "tiers:\n  - name: low\n    accepted_factors:\n      sensitive: []\n",
        "catalog.yaml:4: tiers[0].accepted_factors.sensitive: name at least one factor",
        id="no-factor"),
    pytest.param(
        "tiers: {name: low}\n",
        "catalog.yaml:1: tiers: expected a list, got a mapping",
        id="section-not-a-list"),
    pytest.param(
        "tiers:\n  - name: Low Risk\n",
        "catalog.yaml:2: tiers[0].name: 'Low Risk' is not a valid name",
        id="bad-tier-name"),
    pytest.param(
        "tiers:\n  - rank: 1\n",
        "catalog.yaml:2: tiers[0]: missing required key 'name'",
        id="missing-required-key"),
    pytest.param(
        "tiers:\n  - name: low\n  - name: low\n",
        "catalog.yaml:3: tiers[1].name: duplicate name 'low' (first at line 2)",
        id="duplicate-tier"),
    pytest.param(
        "tiers:\n  - name: low\n    rank: 1\n    rank: 2\n",
        "catalog.yaml:4: tiers[0].rank: duplicate key (first at line 3)",
        id="duplicate-key"),
    pytest.param(
        "tiers:\n  - name: low\n    zones: [moon]\n",
        "catalog.yaml:3: tiers[0].zones[0]: unknown zone 'moon' (none exist yet)",
        id="unknown-zone"),
    pytest.param(
        "zones:\n  - name: office\n    cidrs: [10.0.0.0/8, 10.0.0.300/24]\n",
        "catalog.yaml:3: zones[0].cidrs[1]: '10.0.0.300/24' is not a network (e.g. 10.0.0.0/8)",
        id="bad-cidr"),
    pytest.param(
        "zones:\n  - name: office\n    cidrs: 10.0.0.0/8\n",
        "catalog.yaml:3: zones[0].cidrs: expected a list, got a string ('10.0.0.0/8')",
        id="cidrs-not-a-list"),
    pytest.param(
        BASE + "  - {slug: Bad_Slug, name: X, kind: web, upstream: 'http://x.internal', tier: low}\n",
        "catalog.yaml:20: resources[1].slug: 'Bad_Slug' is not a valid name",
        id="bad-slug"),
    pytest.param(
        BASE + "  - {slug: wiki, name: X, kind: web, upstream: 'http://x.internal', tier: low}\n",
        "catalog.yaml:20: resources[1].slug: duplicate slug 'wiki' (first at line 14)",
        id="duplicate-slug"),
    pytest.param(
        BASE + "  - {slug: x, name: X, kind: web, upstream: 'x.internal:80', tier: low}\n",
        "catalog.yaml:20: resources[1].upstream: a web upstream must be an http:// or https:// URL",
        id="web-upstream-not-a-url"),
    pytest.param(
        BASE + "  - {slug: x, name: X, kind: vnc, upstream: 'http://x.internal:5900', tier: high}\n",
        "catalog.yaml:20: resources[1].upstream: a vnc upstream is host:port, not a URL",
        id="vnc-upstream-is-a-url"),
    pytest.param(
        BASE + "  - {slug: x, name: X, kind: ssh, upstream: 'bastion:70000', tier: high}\n",
        "catalog.yaml:20: resources[1].upstream: port must be a number from 1 to 65535, got '70000'",
        id="bad-port"),
    pytest.param(
        BASE + "  - {slug: x, name: X, kind: telnet, upstream: 'bastion:23', tier: high}\n",
        "catalog.yaml:20: resources[1].kind: 'telnet' is not one of web, vnc, ssh, rdp",
        id="bad-kind"),
    pytest.param(
        BASE.replace("groups: [employee]", "groups: [employe]"),
        "catalog.yaml:19: resources[0].groups[0]: unknown group 'employe' (known: admin, auditor, employee)",
        id="unknown-group"),
    pytest.param(
        BASE.replace("groups: [employee]", "users: [nobody]"),
        "catalog.yaml:19: resources[0].users[0]: unknown user 'nobody'",
        id="unknown-user"),
    pytest.param(
        BASE + "    actions:\n      - {methods: [GET], path: admin/*, class: sensitive}\n",
        "catalog.yaml:21: resources[0].actions[0].path: a path glob starts with '/' (or is '*')",
        id="bad-action-path"),
    pytest.param(
        BASE + "    actions:\n      - {methods: [GET], path: /admin/*, class: secret}\n",
        "catalog.yaml:21: resources[0].actions[0].class: 'secret' is not one of read, write, sensitive",
        id="bad-action-class"),
    pytest.param(
        "tiers:\n  - name: low\n    rank: 1\n  bad indent: x\n",
        "catalog.yaml:4: invalid YAML:",
        id="syntax-error"),
    pytest.param(
        "tiers:\n  - &t {name: low}\n  - *t\n",
        "catalog.yaml:2: invalid YAML: anchors (&t) are not allowed in a catalog",
        id="anchor"),
    pytest.param(
        "tiers:\n  - name: !!python/object/apply:os.system ['true']\n",
        "catalog.yaml:2: invalid YAML: tags (tag:yaml.org,2002:python/object/apply:os.system) are not allowed",
        id="tag"),
    pytest.param(
        "tiers: []\n---\nresources: []\n",
        "catalog.yaml:2: invalid YAML: expected a single document in the stream, but found another",
        id="two-documents"),
    pytest.param(
        "",
        "catalog.yaml:1: the file is empty; expected zones, tiers, resources",
        id="empty"),
    pytest.param(
        "# " + "x" * MAX_BYTES + "\n",
        "catalog.yaml:1: the file is over 1048576 bytes (1 MiB)",
        id="over-one-mebibyte"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_INPUTS)
def test_bad_input_is_named_by_line_and_path_and_changes_nothing(text, expected, tmp_path):
    apply_text(BASE)
    before = snapshot()
    path = tmp_path / "catalog.yaml"
    path.write_text(text)

    problems = problems_of(text)
    with pytest.raises(CommandError) as excinfo:
        run_command("apply", str(path))

    assert any(p.startswith(expected) for p in problems), problems
    assert expected.removeprefix("catalog.yaml") in str(excinfo.value)
    assert "nothing applied" in str(excinfo.value)
    assert snapshot() == before


def test_a_tier_names_the_factors_that_count_and_export_writes_them_back():
    apply_text(BASE.replace("    mfa: {read: 900}\n", "    mfa: {read: 900}\n    accepted_factors: {sensitive: [passkey]}\n"))

    assert Tier.objects.get(name="high").accepted_factors == {"sensitive": ["passkey"]}
    assert Tier.objects.get(name="low").accepted_factors == {}
    exported = export_catalog()
    assert "accepted_factors: {sensitive: [passkey]}" in exported
    assert apply_text(exported) == ()


def test_the_file_and_the_tier_page_refuse_a_proxied_recording_in_the_same_words(catalog_admin_client):
    tier = Tier.objects.create(name="web", access_mode="proxy")
    page = catalog_admin_client.post(f"/manage/tiers/{tier.name}/", {
        "rank": 0, "access_mode": "proxy", "mfa_sensitive": 0, "session_max_seconds": 60, "idle_seconds": 60,
        "reauth_interval_seconds": 30, "clipboard_in": "deny", "clipboard_out": "deny", "file_transfer": "deny",
        "retention_days": 30, "recording": "on"}).content.decode()

    problems = problems_of("tiers:\n  - name: web\n    recording: true\n")

    assert problems == ["catalog.yaml:3: tiers[0].recording: only applies to pixel-streamed tiers "
                        "(access_mode: stream)"]
    assert "only applies to pixel-streamed tiers (access_mode: stream)" in page


@pytest.fixture
def catalog_admin_client():
    return client_for(person("ada", "admin"))


def test_every_problem_is_reported_at_once_in_line_order():
    text = dedent("""
        zones:
          - {name: office, cidrs: [not-a-network]}
        tiers:
          - {name: low, rank: high}
        resources:
          - {slug: a, name: A, kind: web, upstream: ftp://a.internal, tier: nope, groups: [ghosts]}
          - {slug: b, name: B, kind: vnc, upstream: desktop, tier: low, enabled: yes please}
    """)

    problems = problems_of(text)

    assert [p.split(":")[1] for p in problems] == ["2", "4", "6", "6", "6", "7", "7"]
    assert problems[0].startswith("catalog.yaml:2: zones[0].cidrs[0]:")
    assert problems[-1].startswith("catalog.yaml:7: resources[1].enabled:")


def test_one_bad_item_stops_the_good_changes_in_the_same_file():
    apply_text(BASE)
    before = snapshot()
    text = BASE.replace("    rank: 20\n", "    rank: 25\n").replace("tier: low", "tier: hgih")

    with pytest.raises(CatalogError):
        apply_text(text)

    assert snapshot() == before
    assert Tier.objects.get(name="high").rank == 20


@pytest.mark.parametrize(("kind", "upstream", "problem"), [
    ("web", "https://app.internal", None),
    ("web", "http://10.0.0.5:8080/base/", None),
    ("web", "http://[::1]:8080", None),
    ("web", "ftp://app.internal", "http:// or https://"),
    ("web", "http://user:secret@app.internal", "credentials"),
    ("web", "http://app.internal:99999", "invalid port"),
    ("web", "https://", "http:// or https://"),
    ("web", "http://[nope]:80/", "not a valid"),
    ("ssh", "bastion.internal:\uff12\uff12", "port must be"),
    ("vnc", "127.0.0.1:5901", None),
    ("rdp", "[2001:db8::5]:3389", None),
    ("ssh", "bastion.internal:22", None),
    ("ssh", "bastion.internal", "expected host:port"),
    ("ssh", "bastion.internal:0", "port must be"),
    ("ssh", "bastion.internal:ssh", "port must be"),
    ("vnc", "::1:5901", "brackets"),
    ("vnc", "10.0.0.256:5901", "IPv4"),
    ("vnc", "bad host:5901", "spaces"),
    ("vnc", "-bad-.internal:5901", "host name"),
])
def test_upstream_must_match_the_kind(kind, upstream, problem):
    found = upstream_problem(kind, upstream)
    assert found is None if problem is None else problem in (found or ""), found


# --- the command --------------------------------------------------------------------------------


def test_the_apply_command_prints_each_change_and_a_summary(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(BASE)

    out, _ = run_command("apply", str(path))
    again, _ = run_command("apply", str(path))

    assert "create tier low\n" in out and "create resource wiki\n" in out
    assert f"{path}: 4 created, 0 updated, 0 retagged" in out
    assert again.strip() == f"{path}: no changes"


def test_the_dry_run_option_prints_what_would_change_and_writes_nothing(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(BASE)
    before = snapshot()

    out, _ = run_command("apply", str(path), "--dry-run")

    assert "would create resource wiki" in out
    assert "dry run, 4 to create, 0 to update, 0 to retag; nothing written" in out
    assert snapshot() == before


def test_the_export_command_prints_yaml_that_applies_as_a_no_op(tmp_path):
    apply_text(EXAMPLE.read_text())
    out, _ = run_command("export")
    path = tmp_path / "exported.yaml"
    path.write_text(out)
    before = snapshot()

    applied, _ = run_command("apply", str(path))

    assert out.startswith("# The portal's catalog")
    assert "mfa: {read: 0, write: 0, sensitive: 0}" in out
    assert applied.strip() == f"{path}: no changes"
    assert snapshot() == before


def test_a_bad_file_exits_non_zero_with_every_problem_on_stderr(tmp_path, capsys):
    path = tmp_path / "catalog.yaml"
    path.write_text("tiers:\n  - {name: low, rank: x}\nresources:\n  - {slug: a}\n")

    with pytest.raises(SystemExit) as excinfo:
        ManagementUtility(["manage.py", "catalog", "apply", str(path)]).execute()

    err = capsys.readouterr().err
    assert excinfo.value.code == 1
    assert f"{path}: 5 problems, nothing applied" in err
    assert f"{path}:2: tiers[0].rank: expected an integer" in err
    assert f"{path}:4: resources[0]: missing required key 'upstream'" in err


def test_the_example_in_the_docs_applies():
    docs = (EXAMPLE.parent.parent / "catalog.md").read_text()
    example = docs.split("## Example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]

    apply_text(example)

    assert list(Resource.objects.values_list("slug", flat=True).order_by("slug")) == ["ops-desktop", "wiki"]


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        run_command("apply", str(tmp_path / "nope.yaml"))
