"""``manage.py catalog apply FILE`` / ``catalog export``: the catalog as code (docs/catalog.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from tiers.catalog import MAX_BYTES, CatalogError, apply_reviewed, export_catalog, load_catalog


def _read(path: str) -> bytes:
    """The file's bytes, reading at most one byte past the limit so the parser can refuse it."""
    try:
        if path == "-":
            return sys.stdin.buffer.read(MAX_BYTES + 1)
        with Path(path).open("rb") as handle:
            return handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise CommandError(f"{path}: cannot read ({exc.strerror or exc})") from exc


class Command(BaseCommand):
    help = ("Apply a YAML catalog of zones, tiers and resources (all or nothing), "
            "or export the catalog in the same form.")

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{apply,export}")
        apply = sub.add_parser("apply", help="create or update what FILE describes; nothing else")
        apply.add_argument("file", metavar="FILE", help="catalog YAML, or - for standard input")
        apply.add_argument("--dry-run", action="store_true",
                           help="print what would change and write nothing")
        apply.add_argument("--requested-by", metavar="USERNAME",
                           help="the admin asking: a change that lowers protection is filed in "
                                "their name, and they cannot approve it themselves")
        sub.add_parser("export", help="print the whole catalog as YAML")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "export":
            self.stdout.write(export_catalog(), ending="")
            return
        path = options["file"]
        source = "<stdin>" if path == "-" else path
        text = _read(path)
        dry_run = options["dry_run"]
        requested_by = None
        if options.get("requested_by"):
            User = get_user_model()
            requested_by = User.objects.filter(**{User.USERNAME_FIELD: options["requested_by"]}).first()
            if requested_by is None:
                raise CommandError(f"--requested-by: no user named {options['requested_by']!r}")
        try:
            # One transaction for checking and writing, so what was checked is what is written.
            with transaction.atomic():
                result = apply_reviewed(load_catalog(text, source=source), dry_run=dry_run,
                                        requested_by=requested_by)
        except CatalogError as exc:
            count = len(exc.problems)
            raise CommandError(f"{source}: {count} problem{'s' if count != 1 else ''}, nothing applied\n"
                               f"{exc}") from exc
        changes = result.changes
        prefix = "would " if dry_run else ""
        for change in changes:
            self.stdout.write(f"{prefix}{change}")
        for held in result.held:
            self.stdout.write(self.style.WARNING(f"held: {held}"))
        created = sum(c.verb == "create" for c in changes)
        updated = len(changes) - created
        retagged = sum(c.retag is not None and c.verb == "update" for c in changes)
        if result.held:
            self.stdout.write(self.style.WARNING(
                f"{source}: {len(result.held)} change(s) lower protection: not applied, "
                f"{'would wait' if dry_run else 'waiting'} for a second admin's approval "
                "(Manage > Policy changes)"))
        if not changes:
            self.stdout.write(f"{source}: no {'other ' if result.held else ''}changes")
        elif dry_run:
            self.stdout.write(f"{source}: dry run, {created} to create, {updated} to update, "
                              f"{retagged} to retag; nothing written")
        else:
            self.stdout.write(self.style.SUCCESS(
                f"{source}: {created} created, {updated} updated, {retagged} retagged"))
