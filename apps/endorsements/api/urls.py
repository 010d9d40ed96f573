from django.urls import path

from apps.endorsements.api import views

urlpatterns = [
    path("endorsements", views.EndorsementListCreateView.as_view(), name="endorsement-list"),
    path("endorsements/quote", views.EndorsementQuoteView.as_view(), name="endorsement-quote"),
    path("endorsements/<int:pk>", views.EndorsementDetailView.as_view(), name="endorsement-detail"),
    path("endorsements/<int:pk>/cancel", views.EndorsementCancelView.as_view(), name="endorsement-cancel"),
    path("endorsement-batches", views.EndorsementBatchCreateView.as_view(), name="endorsement-batch-list"),
    path("endorsement-batches/<int:pk>", views.EndorsementBatchDetailView.as_view(), name="endorsement-batch-detail"),
]
