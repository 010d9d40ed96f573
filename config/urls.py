from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic.base import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from apps.common import health

handler400 = "apps.common.errors.handler400"
handler403 = "apps.common.errors.handler403"
handler404 = "apps.common.errors.handler404"
handler500 = "apps.common.errors.handler500"

api_v1 = [
    path("", include("apps.employers.api.urls")),
    path("", include("apps.live.urls")),  # before partners: `events/stream` is not an event id
    path("", include("apps.partners.api.urls")),
    path("", include("apps.ledger.api.urls")),
    path("", include("apps.insurers.api.urls")),
    path("", include("apps.endorsements.api.urls")),
    path("", include("apps.reconciliation.api.urls")),
    path("", include("apps.loan_applications.api.urls")),
    path("", include("apps.ops.api.urls")),
]

urlpatterns = [
    path("health", health.liveness, name="health"),
    path("favicon.ico", RedirectView.as_view(url=static("ops/favicon.svg"), permanent=True)),
    path("ready", health.readiness, name="ready"),
    path("metrics", health.metrics, name="metrics"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("", include("apps.oauth.urls")),
    path("admin/", admin.site.urls),
    path("ops/", include("apps.ops.urls")),
    path("sandbox/", include("apps.insurers.sandbox.urls")),
]
