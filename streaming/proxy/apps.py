from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "streaming.proxy"
    label = "proxy"
    verbose_name = "Identity-aware proxy"

    def ready(self) -> None:
        from streaming.proxy import retention, signals  # noqa: F401 - retention registers its hook

        signals.connect()
