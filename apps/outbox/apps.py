from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class OutboxConfig(AppConfig):
    name = "apps.outbox"
    label = "outbox"
    verbose_name = "Outbox"

    def ready(self) -> None:
        from apps.outbox.metrics import register_collector

        register_collector()
        # Every app's consumers register themselves in its handlers.py.
        autodiscover_modules("handlers")
