"""Action rules cannot be made laxer by the spelling of a path (issue 11, the probe's holes).

Express, ASP.NET and many other servers route ``/Sensitive`` like ``/sensitive``; Tomcat cuts
``;jsessionid=...`` from a segment; IIS cuts trailing dots; some apps fold Unicode
compatibility forms. Whatever reading the app makes, the portal must have judged the request
at least as strictly.
"""

from __future__ import annotations

import pytest

from tests.tiers.factories import ResourceFactory
from tiers.context import classify, lenient_reading
from tiers.models import ActionRule
from tiers.types import ActionClass

pytestmark = pytest.mark.django_db


def _resource(**fields):
    resource = ResourceFactory(slug="ledger", **fields)
    ActionRule.objects.create(resource=resource, order=0, methods="*", path="/sensitive-*",
                              action_class="sensitive")
    ActionRule.objects.create(resource=resource, order=1, methods="POST", path="/admin/*",
                              action_class="sensitive")
    return resource


@pytest.mark.parametrize("path", [
    "/sensitive-x", "/Sensitive-x", "/SENSITIVE-X", "/sEnSiTiVe-report",
    "/" + "".join(chr(ord(c) + 0xFEE0) for c in "sensitive") + "-x",  # full-width letters (NFKC)
    "/sensitive-x;jsessionid=1", "/sensitive-x.", "/sensitive-x. ",
])
def test_no_spelling_of_a_sensitive_path_is_judged_milder(path):
    assert classify(_resource(), "GET", path) is ActionClass.SENSITIVE


@pytest.mark.parametrize("path", ["/Admin/users", "/admin;x/users", "/admin./users", "/ADMIN/users"])
def test_a_post_to_an_admin_path_stays_sensitive_however_spelled(path):
    assert classify(_resource(), "POST", path) is ActionClass.SENSITIVE


def test_unrelated_paths_keep_their_class_by_method():
    resource = _resource()
    assert classify(resource, "GET", "/reports") is ActionClass.READ
    assert classify(resource, "POST", "/reports") is ActionClass.WRITE


def test_a_case_sensitive_app_can_opt_in_to_exact_case():
    resource = _resource(paths_case_sensitive=True)
    assert classify(resource, "GET", "/Sensitive-x") is ActionClass.READ
    assert classify(resource, "GET", "/sensitive-x") is ActionClass.SENSITIVE
    # The other lenient readings still hold for it.
    assert classify(resource, "GET", "/sensitive-x;v=1") is ActionClass.SENSITIVE


def test_the_lenient_reading_folds_what_upstreams_fold():
    assert lenient_reading("/\uff41dmin;p=1/x./y") == "/admin/x/y"
    assert lenient_reading("/plain/path") == "/plain/path"
