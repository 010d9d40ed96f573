"""The real URLconf plus three views that fail on purpose, to see how the edge answers them (test_edge.py)."""

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_POST
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.urls import handler400, handler403, handler404, handler500
from config.urls import urlpatterns as real_urlpatterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug outside DRF")


@require_POST
def post_only(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


class DatabaseDown(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        raise OperationalError("connection refused")


class DrfBug(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        raise RuntimeError("a bug inside DRF")


def whoami(request: HttpRequest) -> HttpResponse:
    from apps.common.logging import current_correlation_id

    return HttpResponse(current_correlation_id() or "")


urlpatterns = [
    path("api/v1/_edge/whoami", whoami),
    path("api/v1/_edge/boom", boom),
    path("api/v1/_edge/post-only", post_only),
    path("api/v1/_edge/db-down", DatabaseDown.as_view()),
    path("api/v1/_edge/drf-bug", DrfBug.as_view()),
    *real_urlpatterns,
]
