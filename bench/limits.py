"""The same-run limits of `bench/request_cost.py` (issue 15), mounted only by `config.settings.bench`.

- `bare_json`: a plain Django view answering a small JSON document, through the whole middleware stack.
- `BareCreateView`: a DRF create endpoint through the same middleware, API-key authentication, scope check and
  per-partner rate limiter as every partner endpoint, validating one field and doing one `INSERT … COMMIT`
  into `bench_limit` (a table the bench creates; no model, no migration, nothing shipped).
"""

from __future__ import annotations

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.common.errors import DomainValidationError
from apps.partners.api.base import PartnerGenericAPIView
from apps.partners.models import Scope

CREATE_TABLE_SQL = "CREATE TABLE IF NOT EXISTS bench_limit (id bigserial PRIMARY KEY, note text NOT NULL)"


def bare_json(request: HttpRequest) -> JsonResponse:
    """`GET /bench/bare-json` → 200 `{"ok": true}`."""
    return JsonResponse({"ok": True})


class BareCreateView(PartnerGenericAPIView):
    """`POST /api/v1/bench/bare-create {"note": "<1–64 chars>"}` → 201 `{"id": <int>}`; scope endorsements:write."""

    write_scope = Scope.ENDORSEMENTS_WRITE

    def post(self, request: Request) -> Response:
        note = request.data.get("note") if isinstance(request.data, dict) else None
        if not isinstance(note, str) or not 1 <= len(note) <= 64:
            raise DomainValidationError({"note": "a string of 1 to 64 characters"})
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("INSERT INTO bench_limit (note) VALUES (%s) RETURNING id", [note])
            (row_id,) = cursor.fetchone()
        return Response({"id": row_id}, status=status.HTTP_201_CREATED)
