from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The cross-app demo commands (`demo`, `seed_demo`, `demo_key`): the top layer, above every domain app,
    so no domain app imports another only to seed demo data. No models."""

    name = "apps.demo"
    label = "demo"
    verbose_name = "Demo"
