from django.apps import AppConfig


class OAuthConfig(AppConfig):
    name = "apps.oauth"
    label = "oauth"
    verbose_name = "OAuth clients and signing keys"

    def ready(self) -> None:
        from apps.oauth import schema  # noqa: F401 - registers the OpenAPI security scheme
        from apps.oauth.models import OAuthClient
        from apps.partners.principal_cache import install_invalidation

        install_invalidation(OAuthClient)
