from django.urls import path

from apps.insurers.api import views

urlpatterns = [
    path("insurers/<slug:code>/circuit", views.InsurerCircuitView.as_view(), name="insurer-circuit"),
    path(
        "insurer-callbacks/<slug:insurer_code>",
        views.InsurerCallbackView.as_view(),
        name="insurer-callback",
    ),
]
