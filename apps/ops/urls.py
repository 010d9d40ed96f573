from django.urls import path

from apps.ops import views

app_name = "ops"
urlpatterns = [
    path("", views.ops_dashboard, name="dashboard"),
    path("panels", views.ops_panels, name="panels"),
]
