from django.apps import AppConfig


class InsurersConfig(AppConfig):
    name = "apps.insurers"
    label = "insurers"
    verbose_name = "Insurer integrations"

    def ready(self) -> None:
        from apps.insurers.metrics import register_collector

        register_collector()
