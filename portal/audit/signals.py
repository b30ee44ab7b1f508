"""Changes made through Django admin land in the audit chain too (not only in its LogEntry)."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db.models.signals import post_save
from django.dispatch import receiver

from portal.audit.chain import record

_VERBS = {ADDITION: "add", CHANGE: "change", DELETION: "delete"}


@receiver(post_save, sender=LogEntry)
def audit_admin_change(sender: Any, instance: LogEntry, created: bool, **kwargs: Any) -> None:
    if not created:
        return
    record(f"admin.{_VERBS.get(instance.action_flag, 'action')}", outcome="success",
           actor=instance.user.get_username() if instance.user_id else "",
           detail={"model": f"{instance.content_type.app_label}.{instance.content_type.model}"
                    if instance.content_type_id else "", "object_id": instance.object_id or "",
                    "object": instance.object_repr, "change": instance.get_change_message()})
