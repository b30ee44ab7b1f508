from django.apps import AppConfig


class TiersConfig(AppConfig):
    name = "tiers"
    verbose_name = "Catalog and tiers"

    def ready(self) -> None:
        from tiers import changes, context

        changes.connect()  # model signals become policy changes (docs/decisions/0027)
        changes.subscribe(context.forget_zones, to=(changes.CatalogChanged,), at_once=True)
