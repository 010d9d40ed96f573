from django.apps import AppConfig


class EmployersConfig(AppConfig):
    name = "apps.employers"
    label = "employers"
    verbose_name = "Employers, insurers and policies"
