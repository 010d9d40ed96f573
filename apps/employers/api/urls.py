from django.urls import path

from apps.employers.api import views

urlpatterns = [
    path("employers", views.EmployerListCreateView.as_view(), name="employer-list"),
    path("employers/<int:pk>", views.EmployerDetailView.as_view(), name="employer-detail"),
    path("employees", views.EmployeeListView.as_view(), name="employee-list"),
    path("policies", views.PolicyListCreateView.as_view(), name="policy-list"),
    path("policies/<int:pk>", views.PolicyDetailView.as_view(), name="policy-detail"),
    path("coverages", views.CoverageListView.as_view(), name="coverage-list"),
    path("insurers", views.InsurerListView.as_view(), name="insurer-list"),
]
