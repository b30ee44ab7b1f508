from django.apps import AppConfig


class IsolationConfig(AppConfig):
    name = "streaming.isolation"
    label = "isolation"
    verbose_name = "Isolated sessions"
    default_auto_field = "django.db.models.BigAutoField"
