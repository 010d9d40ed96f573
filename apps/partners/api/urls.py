from django.urls import path

from apps.partners.webhooks import api

urlpatterns = [
    path("webhook-endpoints", api.WebhookEndpointListCreateView.as_view(), name="webhook-endpoint-list"),
    path("webhook-endpoints/<int:pk>", api.WebhookEndpointDetailView.as_view(), name="webhook-endpoint-detail"),
    path(
        "webhook-endpoints/<int:pk>/rotate-secret",
        api.WebhookEndpointRotateSecretView.as_view(),
        name="webhook-endpoint-rotate-secret",
    ),
    path("webhook-endpoints/<int:pk>/attempts", api.WebhookAttemptListView.as_view(), name="webhook-endpoint-attempts"),
    path("events", api.EventListView.as_view(), name="event-list"),
    path("events/<str:public_id>", api.EventDetailView.as_view(), name="event-detail"),
    path("events/<str:public_id>/redeliver", api.EventRedeliverView.as_view(), name="event-redeliver"),
]
