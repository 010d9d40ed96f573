import os
from importlib import import_module

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
        # The benchmark's consumer (bench/outbox_relay.py) exists only in processes started with KEEL_BENCH=1.
        if os.environ.get("KEEL_BENCH") == "1":
            import_module("apps.outbox.bench_consumer")
