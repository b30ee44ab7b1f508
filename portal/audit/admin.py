from django.contrib import admin

from portal.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only, the admin only lets staff look."""

    list_display = ("seq", "time", "actor", "action", "resource", "outcome", "client_address")
    list_filter = ("action", "outcome")
    search_fields = ("actor", "resource", "request_id")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
