"""The desktop enforcement point: guacd broker, tunnel, vault, live sessions, recordings."""

from django.apps import AppConfig


class DesktopConfig(AppConfig):
    name = "streaming.desktop"
    label = "desktop"
    verbose_name = "Pixel-streamed desktops"

    def ready(self) -> None:
        from portal import health
        from streaming.desktop import (
            live,  # noqa: F401 - registers the auditor's live sessions panel
            retention,  # noqa: F401 - registers its retention hook
            signals,
        )
        from streaming.desktop.broker import check_guacd

        health.DEPENDENCY_CHECKS["guacd"] = check_guacd
        signals.connect()  # live sessions re-check on policy changes (tiers.changes)
