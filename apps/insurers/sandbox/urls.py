"""Included by the project at `sandbox/`: `POST /sandbox/<code>/endorsements[/batch]` (REST), `/<code>/soap` (SOAP),
`GET /sandbox/<code>/roster|statement` (reconciliation)."""

from django.urls import path

from apps.insurers.sandbox import views

app_name = "sandbox"
urlpatterns = [
    path("<slug:code>/endorsements/batch", views.endorsements_batch, name="endorsements-batch"),
    path("<slug:code>/endorsements", views.endorsement_single, name="endorsements"),
    path("<slug:code>/roster", views.roster_list, name="roster"),
    path("<slug:code>/statement", views.roster_list, name="statement"),
    path("<slug:code>/soap", views.soap_endpoint, name="soap"),
]
