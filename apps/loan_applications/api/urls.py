from django.urls import path

from apps.loan_applications.api import views

urlpatterns = [
    path("loan-applications", views.LoanApplicationListCreateView.as_view(), name="loan-application-list"),
    path(
        "loan-applications/<uuid:pk>",
        views.LoanApplicationDetailView.as_view(),
        name="loan-application-detail",
    ),
]
