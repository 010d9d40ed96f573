from django.apps import AppConfig


class EmployersConfig(AppConfig):
    name = "apps.employers"
    label = "employers"
    verbose_name = "Employers, insurers and policies"

    def ready(self) -> None:
        # Partners (a lower layer) asks which partner owns an employer through this resolver
        # (apps/partners/ownership.py).
        from apps.employers.selectors import employer_partners
        from apps.partners.ownership import employer_partners_register

        employer_partners_register(employer_partners)

        # A deleted employer leaves every key's and client's binding through a cascade that sends no signal of
        # the binding's own (Django sends none for auto-created M2M tables): clear cached principals here.
        from apps.employers.models import Employer
        from apps.partners.principal_cache import install_invalidation

        install_invalidation(Employer)
