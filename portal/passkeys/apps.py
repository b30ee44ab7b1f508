from django.apps import AppConfig


class PasskeysConfig(AppConfig):
    name = "portal.passkeys"
    label = "passkeys"
    verbose_name = "Passkeys (WebAuthn)"
