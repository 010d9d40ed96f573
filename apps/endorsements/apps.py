from django.apps import AppConfig


class EndorsementsConfig(AppConfig):
    name = "apps.endorsements"
    label = "endorsements"
    verbose_name = "Endorsements"
