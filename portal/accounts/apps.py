from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "portal.accounts"
    label = "accounts"
    verbose_name = "Accounts and MFA"

    def ready(self) -> None:
        from portal.accounts import roles, signals  # noqa: F401

        post_migrate.connect(roles.ensure_roles_after_migrate, sender=self)
