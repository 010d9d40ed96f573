from django.urls import path

from apps.ops import live, views

app_name = "ops"
urlpatterns = [
    path("", views.ops_dashboard, name="dashboard"),
    path("panels", views.ops_panels, name="panels"),
    path("events/stream", live.ops_event_stream, name="events-stream"),
]
