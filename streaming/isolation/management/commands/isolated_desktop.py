"""``manage.py isolated_desktop SLUG IMAGE``: run a desktop resource per session in a fresh slot."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from portal.audit.chain import record
from streaming.isolation.models import IsolatedDesktop
from tiers.models import Resource


class Command(BaseCommand):
    help = ("Make a desktop resource run a desktop image in a disposable slot for every session "
            "(IMAGE from PORTAL_SESSION_IMAGES), or 'none' to use its fixed upstream again.")

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("image")

    def handle(self, *args, **options):
        resource = Resource.objects.filter(slug=options["slug"]).first()
        if resource is None or resource.kind == "web":
            raise CommandError(f"no desktop resource {options['slug']!r} "
                               "(web apps are isolated by their tier)")
        image = options["image"]
        if image == "none":
            IsolatedDesktop.objects.filter(resource=resource).delete()
        elif image not in settings.PORTAL_SESSION_IMAGES:
            known = ", ".join(sorted(settings.PORTAL_SESSION_IMAGES))
            raise CommandError(f"no image {image!r}; known: {known}")
        else:
            IsolatedDesktop.objects.update_or_create(resource=resource, defaults={"image": image})
        record("isolation.desktop_image", outcome="success", actor="manage.py", resource=resource.slug,
               detail={"image": image})
        what = "fixed upstream" if image == "none" else f"{image} per session"
        self.stdout.write(f"{resource.slug}: {what}")
