"""Panels other apps add to the auditor's front page (e.g. the desktop's live sessions).

The registry sits with the ledger, below every app, so an app registers its own panel from
its ``AppConfig.ready`` without importing the workspace (which sits on top of the layers:
pyproject.toml, ``[tool.importlinter]``). The workspace only reads :func:`workspace_panels`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

__all__ = ["WorkspacePanel", "register_panel", "workspace_panels"]


@dataclass(frozen=True)
class WorkspacePanel:
    """One front-page panel: ``context(request)`` gives the template's ``section``, or None to hide it."""

    key: str
    template: str
    context: Callable[[HttpRequest], dict[str, Any] | None]


_PANELS: dict[str, WorkspacePanel] = {}


def register_panel(key: str, template: str, context: Callable[[HttpRequest], dict[str, Any] | None]) -> None:
    """Add (or replace) a front-page panel; call it from the owning app's ``AppConfig.ready``."""
    _PANELS[key] = WorkspacePanel(key, template, context)


def workspace_panels() -> list[WorkspacePanel]:
    """The registered panels, in the order they were first registered."""
    return list(_PANELS.values())
