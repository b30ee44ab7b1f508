"""`seed_demo --json`: the contract of DESIGN.md section 3, idempotent."""

from __future__ import annotations

import base64
import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django_otp.plugins.otp_totp.models import TOTPDevice

from streaming.desktop.vault import secret_for
from tiers.models import Resource, Tier

pytestmark = pytest.mark.django_db


def seed(*args: str) -> dict:
    out = io.StringIO()
    call_command("seed_demo", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture(autouse=True)
def _own_var(settings, tmp_path):
    settings.VAR_DIR = tmp_path  # demo secrets of this test only


def test_users_and_resources_follow_the_contract():
    data = seed("--base-url", "https://portal.example:8443")
    roles = {u["role"]: u for u in data["users"]}
    assert set(roles) == {"employee", "admin", "auditor"}
    for user in data["users"]:
        assert {"username", "password", "role", "totp_secret"} <= set(user)
        device = TOTPDevice.objects.get(user__username=user["username"], confirmed=True)
        assert base64.b32decode(user["totp_secret"]) == device.bin_key
        assert get_user_model().objects.get(username=user["username"]).check_password(user["password"])
    kinds = {r["slug"]: (r["tier"], r["kind"], r["url"]) for r in data["resources"]}
    assert kinds["wiki"] == ("low", "web", "https://portal.example:8443/apps/wiki/")
    assert kinds["ops-desktop"][:2] == ("high", "vnc")
    assert kinds["db-shell"][:2] == ("critical", "ssh")


def test_reseeding_refreshes_and_never_duplicates():
    first = seed()
    counts = (get_user_model().objects.count(), TOTPDevice.objects.count(), Resource.objects.count(),
              Tier.objects.count())
    second = seed()
    assert counts == (get_user_model().objects.count(), TOTPDevice.objects.count(),
                      Resource.objects.count(), Tier.objects.count())
    assert first["users"] == second["users"], "the same secrets, so an enrolled phone keeps working"


def test_targets_file_points_resources_at_the_running_targets_and_fills_the_vault(tmp_path):
    targets = tmp_path / "services.json"
    targets.write_text(json.dumps({
        "web": "http://127.0.0.1:9101/apps/wiki/", "vnc": "127.0.0.1:9102", "vnc_password": "vncpass1",
        "ssh": "127.0.0.1:9103", "ssh_username": "portal-demo", "ssh_password": "s3cret-ssh"}))
    seed("--targets", str(targets))
    assert Resource.objects.get(slug="wiki").upstream == "http://127.0.0.1:9101/apps/wiki/"
    ssh = Resource.objects.get(slug="db-shell")
    assert ssh.upstream == "127.0.0.1:9103"
    login = secret_for(ssh.pk)
    assert (login.username, login.password) == ("portal-demo", "s3cret-ssh")
    assert secret_for(Resource.objects.get(slug="ops-desktop").pk).password == "vncpass1"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_a_bad_targets_file_is_a_clear_error_and_changes_nothing(tmp_path, content):
    from django.core.management.base import CommandError

    targets = tmp_path / "services.json"
    targets.write_text(content)
    with pytest.raises(CommandError, match="--targets"):
        seed("--targets", str(targets))
    assert not Resource.objects.exists()


@pytest.mark.host_mode
def test_in_host_mode_a_web_app_is_listed_at_its_own_origin():
    data = seed("--base-url", "https://portal.example:8443")
    urls = {r["slug"]: r["url"] for r in data["resources"]}
    assert urls["wiki"] == "https://wiki.apps.localhost:8443/"
    assert urls["ops-desktop"] == "https://portal.example:8443/desktop/ops-desktop/"


def sign_in_with_code(client, username: str, password: str, code: str):
    """Password, then ``code`` on the second-factor step; the answer to the code."""
    assert client.post("/accounts/login/", {"username": username, "password": password}).status_code == 302
    return client.post("/accounts/mfa/verify/", {"otp_token": code})


def test_each_demo_user_gets_backup_codes_that_sign_in_once_and_come_back_on_reseed(client):
    users = {u["username"]: u for u in seed()["users"]}
    for user in users.values():
        assert len(user["backup_codes"]) == 3 and len(set(user["backup_codes"])) == 3
    alice = users["alice"]
    code = alice["backup_codes"][0]
    assert sign_in_with_code(client, "alice", alice["password"], code).status_code == 302
    client.logout()
    assert sign_in_with_code(client, "alice", alice["password"], code).status_code != 302, "used once"
    client.logout()
    again = {u["username"]: u for u in seed()["users"]}
    assert again["alice"]["backup_codes"] == alice["backup_codes"]
    assert sign_in_with_code(client, "alice", alice["password"], code).status_code == 302
