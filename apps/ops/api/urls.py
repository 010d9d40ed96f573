from django.urls import path

from apps.ops.api import views

urlpatterns = [
    path("analytics/endorsements", views.EndorsementAnalyticsView.as_view(), name="analytics-endorsements"),
]
