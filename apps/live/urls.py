from django.urls import path

from apps.live import views

urlpatterns = [
    path("events/stream", views.event_stream, name="event-stream"),
]
