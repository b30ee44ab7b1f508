"""Create or refresh the demo users (and, as later parts land, resources); print them."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from demo.catalog import seed_demo_catalog
from portal.accounts.mfa import BACKUP_NAME
from portal.accounts.roles import ADMIN, AUDITOR, EMPLOYEE, ensure_roles
from streaming.proxy.origins import app_origin

DEMO_USERS = [
    {"username": "alice", "role": EMPLOYEE, "first_name": "Alice", "last_name": "Employee"},
    {"username": "adam", "role": ADMIN, "first_name": "Adam", "last_name": "Admin"},
    {"username": "audrey", "role": AUDITOR, "first_name": "Audrey", "last_name": "Auditor"},
]


DEMO_BACKUP_CODES = 3  # enough to try one (each works once); a re-seed restores them


def demo_secrets(usernames: list[str]) -> dict[str, dict[str, str]]:
    """Random demo passwords, TOTP keys and backup codes, made once per install, kept under ``var/``.

    Nothing secret is in the repository; re-seeding reuses them so an authenticator app
    enrolled with a printed secret keeps working.
    """
    path = Path(settings.VAR_DIR) / "demo_secrets.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    for name in usernames:
        entry = known.setdefault(name, {"password": f"{name}-{secrets.token_urlsafe(12)}",
                                        "totp_key": secrets.token_hex(20)})
        # Files of earlier installs gain codes without losing the enrolled TOTP key.
        entry.setdefault("backup_codes", [StaticToken.random_token() for _ in range(DEMO_BACKUP_CODES)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(known, indent=2))
    path.chmod(0o600)
    return known


def _set_backup_codes(user: AbstractBaseUser, codes: list[str]) -> None:
    """Exactly ``codes`` as the user's backup codes: a re-seed gives back the ones tried."""
    device, _ = StaticDevice.objects.get_or_create(user=user, name=BACKUP_NAME, defaults={"confirmed": True})
    device.confirmed = True
    device.throttling_failure_count, device.throttling_failure_timestamp = 0, None
    device.save()
    device.token_set.all().delete()
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)


def _seed_resources(base_url: str, targets_file: str | None) -> list[dict[str, str]]:
    if targets_file is None:
        # The running demo's services, when there are any, so a re-seed keeps pointing at them.
        running = Path(settings.VAR_DIR) / "demo" / "services.json"
        targets_file = str(running) if running.exists() else None
    try:
        targets = json.loads(Path(targets_file).read_text()) if targets_file else {}
    except (OSError, ValueError) as exc:
        raise CommandError(f"--targets {targets_file}: not a readable JSON file ({exc})") from exc
    if not isinstance(targets, dict):
        raise CommandError(f"--targets {targets_file}: expected a JSON object of targets")
    resources = seed_demo_catalog(targets)
    base = urlsplit(base_url)
    for r in resources:
        if r["kind"] == "web" and settings.PORTAL_APPS_DOMAIN:
            # Host mode: a web app is served on its own origin, not the portal's.
            r["url"] = app_origin(r["slug"], settings.PORTAL_APPS_DOMAIN, scheme=base.scheme or "https",
                                  port=str(base.port or "")) + "/"
        else:
            r["url"] = base_url.rstrip("/") + r["url"]
    return resources


class Command(BaseCommand):
    help = "Create or refresh demo users and resources (idempotent). --json prints them."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print users and resources as JSON")
        parser.add_argument("--targets", metavar="FILE",
                            help="JSON from scripts/demo_services.py: where the demo app and targets "
                                 "listen, and the targets' logins (stored in the vault)")
        parser.add_argument("--base-url", default="https://localhost:8443",
                            help="where the portal is served (for the resources' URLs)")

    @transaction.atomic
    def handle(self, *args, **options):
        groups = ensure_roles()
        User = get_user_model()
        users = []
        known = demo_secrets([spec["username"] for spec in DEMO_USERS])
        for spec in DEMO_USERS:
            spec = {**spec, **known[spec["username"]], "email": f"{spec['username']}@example.com"}
            user, _ = User.objects.get_or_create(username=spec["username"])
            user.email = spec["email"]
            user.first_name, user.last_name = spec["first_name"], spec["last_name"]
            user.is_active = True
            user.is_staff = spec["role"] == ADMIN
            user.set_password(spec["password"])
            user.save()
            user.groups.set([groups[spec["role"]]])
            device, _ = TOTPDevice.objects.get_or_create(
                user=user, name="Authenticator app", defaults={"key": spec["totp_key"]})
            device.key, device.confirmed, device.last_t = spec["totp_key"], True, -1
            device.throttling_failure_count = 0
            device.throttling_failure_timestamp = None
            device.save()
            TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
            _set_backup_codes(user, spec["backup_codes"])
            users.append({
                "username": user.username, "password": spec["password"], "role": spec["role"],
                "email": user.email,
                "totp_secret": base64.b32encode(bytes.fromhex(spec["totp_key"])).decode(),
                "backup_codes": list(spec["backup_codes"]),
            })
        resources = _seed_resources(options["base_url"], options["targets"])
        if options["json"]:
            self.stdout.write(json.dumps({"users": users, "resources": resources}, indent=2))
        else:
            for u in users:
                self.stdout.write(f"{u['role']:9} {u['username']:8} password={u['password']} "
                                  f"totp_secret={u['totp_secret']} "
                                  f"backup_codes={','.join(u['backup_codes'])}")
