from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "streaming.proxy"
    label = "proxy"
    verbose_name = "Identity-aware proxy"

    def ready(self) -> None:
        from streaming.proxy import signals

        signals.connect()
