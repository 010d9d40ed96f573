from django.apps import AppConfig


class EndorsementsConfig(AppConfig):
    name = "apps.endorsements"
    label = "endorsements"
    verbose_name = "Endorsements"

    def ready(self) -> None:
        from apps.endorsements.metrics import register_collector

        register_collector()
