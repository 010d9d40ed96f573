from django.apps import AppConfig


class PartnersConfig(AppConfig):
    name = "apps.partners"
    label = "partners"
    verbose_name = "Partners and API keys"

    def ready(self) -> None:
        from apps.partners import schema  # noqa: F401 - registers the OpenAPI security scheme
