"""Request-size limits, answered as 413 problem+json before anything reads the body."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from apps.common.errors import problem_response

UPLOAD_PATHS = ("/api/v1/endorsement-batches",)


class RequestSizeLimitMiddleware:
    """Reject API bodies over the limit by their declared length (uploads have a larger limit).

    Bodies sent without a Content-Length are still bounded: Django raises `RequestDataTooBig` past
    `DATA_UPLOAD_MAX_MEMORY_SIZE`, which the API's exception handler also turns into 413.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return problem_response(request, 400, "Content-Length is not a number.")
            content_type = request.META.get("CONTENT_TYPE", "")
            # Uploads and JSON batches (up to 50,000 rows) get the upload limit; everything else the body limit.
            is_upload = content_type.startswith("multipart/") or request.path.startswith(UPLOAD_PATHS)
            limit = settings.API_MAX_UPLOAD_BYTES if is_upload else settings.API_MAX_BODY_BYTES
            if length > limit:
                return problem_response(
                    request,
                    413,
                    f"The request body is {length} bytes; this endpoint accepts at most {limit}.",
                    slug="payload-too-large",
                )
        return self.get_response(request)
