"""``manage.py catalog apply FILE`` / ``catalog export``: the catalog as code (docs/catalog.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from tiers.catalog import MAX_BYTES, CatalogError, apply_catalog, export_catalog, load_catalog


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
        sub.add_parser("export", help="print the whole catalog as YAML")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "export":
            self.stdout.write(export_catalog(), ending="")
            return
        path = options["file"]
        source = "<stdin>" if path == "-" else path
        text = _read(path)
        dry_run = options["dry_run"]
        try:
            # One transaction for checking and writing, so what was checked is what is written.
            with transaction.atomic():
                changes = apply_catalog(load_catalog(text, source=source), dry_run=dry_run)
        except CatalogError as exc:
            count = len(exc.problems)
            raise CommandError(f"{source}: {count} problem{'s' if count != 1 else ''}, nothing applied\n"
                               f"{exc}") from exc
        prefix = "would " if dry_run else ""
        for change in changes:
            self.stdout.write(f"{prefix}{change}")
        created = sum(c.verb == "create" for c in changes)
        updated = len(changes) - created
        retagged = sum(c.retag is not None and c.verb == "update" for c in changes)
        if not changes:
            self.stdout.write(f"{source}: no changes")
        elif dry_run:
            self.stdout.write(f"{source}: dry run, {created} to create, {updated} to update, "
                              f"{retagged} to retag; nothing written")
        else:
            self.stdout.write(self.style.SUCCESS(
                f"{source}: {created} created, {updated} updated, {retagged} retagged"))
