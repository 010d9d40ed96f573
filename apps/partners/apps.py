from django.apps import AppConfig


class PartnersConfig(AppConfig):
    name = "apps.partners"
    label = "partners"
    verbose_name = "Partners and API keys"

    def ready(self) -> None:
        from apps.partners import schema  # noqa: F401 - registers the OpenAPI security scheme
        from apps.partners.models import APIKey, Partner
        from apps.partners.principal_cache import install_invalidation

        install_invalidation(APIKey, Partner)
