from django.urls import path

from apps.ledger.api import views

urlpatterns = [
    path("ledger/balance", views.LedgerBalanceView.as_view(), name="ledger-balance"),
    path("ledger/topups", views.LedgerTopupView.as_view(), name="ledger-topups"),
    path("ledger/entries", views.LedgerEntriesView.as_view(), name="ledger-entries"),
]
