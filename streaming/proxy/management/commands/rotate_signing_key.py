"""Rotate the identity-assertion signing key, keeping the old one published for a while."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from streaming.proxy.assertion import MAX_LIFETIME, AssertionKeyError, KeyRing


class Command(BaseCommand):
    help = ("Make a new ES256 signing key for X-Portal-Assertion. The previous key stays in "
            "/.well-known/jwks.json for --overlap seconds so assertions already issued (and "
            "verifiers' cached JWKS) keep working; keys past their overlap are deleted.")

    def add_arguments(self, parser):
        parser.add_argument("--overlap", type=int, default=3600,
                            help=f"seconds the old key stays published (at least {MAX_LIFETIME})")

    def handle(self, *args, overlap: int, **options):
        ring = KeyRing(settings.PORTAL_ASSERTION_KEYS_DIR)
        try:
            new, previous, removed = ring.rotate(overlap=overlap)
        except AssertionKeyError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"active key: {new}")
        if previous:
            self.stdout.write(f"previous key {previous} stays published for {overlap} s")
        for kid in removed:
            self.stdout.write(f"removed key {kid} (overlap ended)")
        self.stdout.write(f"keys directory: {ring.directory}")
