"""Audit events for Django's own authentication signals."""

from typing import Any

from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

from portal.audit.chain import record_request


@receiver(user_logged_out)
def audit_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if request is not None and user is not None:
        record_request(request, "logout", outcome="success", actor=user.get_username())
