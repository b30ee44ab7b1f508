"""``manage.py session_host``: run a session host (a pool of disposable sandboxes)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from streaming.isolation.host import SessionHostRunner


class Command(BaseCommand):
    help = "Keep warm, disposable slots (bubblewrap sandboxes with X and VNC) for isolated sessions."

    def add_arguments(self, parser):
        parser.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}",
                            help="unique name of this session host")
        parser.add_argument("--slots", type=int, default=settings.PORTAL_SESSION_HOST_SLOTS,
                            help="how many slots to keep")
        parser.add_argument("--address", default="127.0.0.1",
                            help="address the slots' VNC bridges listen on (guacd must reach it)")
        parser.add_argument("--uid-base", type=int, default=settings.PORTAL_SESSION_SLOT_UID_BASE,
                            help="slot N runs as this user id + N (unused ids; one range per host)")
        parser.add_argument("--slots-dir", default=str(settings.PORTAL_SESSION_SLOTS_DIR))
        parser.add_argument("--memory-mb", type=int, default=settings.PORTAL_SESSION_SLOT_MEMORY_MB)
        parser.add_argument("--prewarm-browser", action=argparse.BooleanOptionalAction,
                            default=settings.PORTAL_SESSION_PREWARM_BROWSER,
                            help="warm slots already run the kiosk browser (faster isolated web apps, "
                                 "about 400 MiB more per warm slot)")

    def handle(self, *args, **options):
        if os.geteuid() != 0:
            raise CommandError("a session host runs as root: every slot drops to a user id of its own")
        if options["slots"] < 1:
            raise CommandError("--slots must be at least 1")
        runner = SessionHostRunner(
            options["name"], options["slots"], slots_dir=Path(options["slots_dir"]) / options["name"],
            uid_base=options["uid_base"], images=settings.PORTAL_SESSION_IMAGES,
            address=options["address"], memory_mb=options["memory_mb"],
            prewarm_browser=options["prewarm_browser"])
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        self.stdout.write(f"session host {options['name']}: {options['slots']} slots", ending="\n")
        self.stdout.flush()
        runner.run(stop)
