"""``manage.py vault set SLUG --username U`` (password on stdin) and ``manage.py vault rotate``.

``rotate`` re-seals everything sealed with the vault's keys: targets' logins and the IdP client
secrets entered in the admin (``portal.sso.sealing``), so the old keys can then be dropped.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.sso import sealing
from streaming.desktop import vault
from tiers.models import Resource


class Command(BaseCommand):
    help = "Store a target's login in the vault, or re-seal every login with the newest key."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        put = sub.add_parser("set", help="Store the login of a resource; the password is read from stdin.")
        put.add_argument("slug")
        put.add_argument("--username", default="")
        sub.add_parser("rotate", help="Re-seal every credential and IdP client secret with the first key "
                                      "of PORTAL_VAULT_KEYS.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "rotate":
            targets, idps = vault.rotate(), sealing.reseal_all()
            self.stdout.write(f"re-sealed {targets} credential(s) and {idps} IdP client secret(s) "
                              "with the newest key")
            return
        resource = Resource.objects.filter(slug=options["slug"]).first()
        if resource is None:
            raise CommandError(f"no resource {options['slug']!r}")
        password = sys.stdin.readline().rstrip("\n")  # never an argument: argv shows in `ps`
        vault.store(resource, vault.TargetSecret(username=options["username"], password=password))
        self.stdout.write(f"stored the login of {resource.slug}")
