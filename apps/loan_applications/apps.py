from django.apps import AppConfig


class LoanApplicationsConfig(AppConfig):
    name = "apps.loan_applications"
    label = "loan_applications"
    verbose_name = "Loan applications"
