from django.apps import AppConfig


class InsurersConfig(AppConfig):
    name = "apps.insurers"
    label = "insurers"
    verbose_name = "Insurer integrations"
