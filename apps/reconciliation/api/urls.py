from django.urls import path

from apps.reconciliation.api import views

urlpatterns = [
    path("reconciliations", views.ReconciliationCreateView.as_view(), name="reconciliation-list"),
    path("reconciliations/<int:pk>", views.ReconciliationDetailView.as_view(), name="reconciliation-detail"),
    path(
        "reconciliations/<int:pk>/discrepancies",
        views.ReconciliationDiscrepancyListView.as_view(),
        name="reconciliation-discrepancies",
    ),
    path("discrepancies/<int:pk>", views.DiscrepancyDetailView.as_view(), name="discrepancy-detail"),
    path("discrepancies/<int:pk>/resolve", views.DiscrepancyResolveView.as_view(), name="discrepancy-resolve"),
]
