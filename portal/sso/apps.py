from django.apps import AppConfig


class SsoConfig(AppConfig):
    name = "portal.sso"
    label = "sso"
    verbose_name = "Enterprise sign-in (OpenID Connect)"
    default_auto_field = "django.db.models.BigAutoField"
