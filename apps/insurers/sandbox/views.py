"""HTTP face of the sandbox insurer. Plain Django views, not part of the partner API: they simulate an
external party, need no API key, and exist only when `SANDBOX_INSURER_ENABLED` is true."""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any

from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from apps.common.middleware import mark_client_fault
from apps.insurers.callback_secrets import callback_secret_open
from apps.insurers.conf import sandbox_enabled
from apps.insurers.models import Insurer, InsurerProtocol
from apps.insurers.sandbox import roster, soap, soap_roster
from apps.insurers.sandbox.callbacks import schedule_callbacks
from apps.insurers.sandbox.engine import SandboxInputError, parse_items, sandbox_apply, sandbox_config_for
from apps.insurers.sandbox.models import SandboxConfig

log = logging.getLogger(__name__)


def _prelude(code: str) -> tuple[SandboxConfig, JsonResponse | None]:
    if not sandbox_enabled():
        raise Http404("The sandbox insurer is disabled.")
    config = sandbox_config_for(code)
    if config.latency_ms:
        time.sleep(config.latency_ms / 1000)
    # A simulation, not security: the stdlib generator is fine.
    if config.failure_rate and random.random() < config.failure_rate:  # noqa: S311
        failure = JsonResponse({"detail": "The sandbox insurer is temporarily unavailable (simulated)."}, status=503)
        failure["Retry-After"] = "1"
        return config, failure
    return config, None


def _apply(config: SandboxConfig, raw_items: Any) -> list[dict[str, Any]]:
    items = parse_items(raw_items)
    results, owed = sandbox_apply(config=config, items=items)
    if owed:
        url = config.callback_url
        secret = callback_secret_open(config.callback_secret, insurer_code=config.code, owner="sandbox")
        transaction.on_commit(lambda: schedule_callbacks(url=url, secret=secret, row_ids=owed))
    return results


@csrf_exempt
@require_POST
def endorsements_batch(request: HttpRequest, code: str) -> JsonResponse:
    config, failure = _prelude(code)
    if failure is not None:
        return failure
    try:
        body = json.loads(request.body)
        raw_items = body["endorsements"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"detail": "Expected a JSON object with an `endorsements` list."}, status=400)
    try:
        results = _apply(config, raw_items)
    except SandboxInputError as exc:
        return JsonResponse({"detail": str(exc)}, status=422)
    return JsonResponse({"results": results})


@csrf_exempt
@require_POST
def endorsement_single(request: HttpRequest, code: str) -> JsonResponse:
    """One endorsement per request; the `Idempotency-Key` header is the endorsement's key."""
    config, failure = _prelude(code)
    if failure is not None:
        return failure
    try:
        item = json.loads(request.body)
        if not isinstance(item, dict):
            raise TypeError
    except (ValueError, TypeError):
        return JsonResponse({"detail": "Expected a JSON object."}, status=400)
    header_key = request.headers.get("Idempotency-Key")
    if header_key:
        item.setdefault("idempotency_key", header_key)
    try:
        results = _apply(config, [item])
    except SandboxInputError as exc:
        return JsonResponse({"detail": str(exc)}, status=422)
    return JsonResponse(results[0])


@require_http_methods(["GET"])
def roster_list(request: HttpRequest, code: str) -> JsonResponse:
    """`GET /sandbox/<code>/roster?policy_number=P[&cursor=C][&limit=N]` (ADR 0040): one keyset page of the
    insurer's roster for a policy, `{"members", "page", "next_cursor"}`; `GET /sandbox/<code>/statement` (same
    parameters): its statement of charges, `{"charges", "page", "next_cursor"}`. Both answer 429 +
    `Retry-After` or 503 when the roster controls say so."""
    config, failure = _prelude(code)
    if failure is not None:
        return failure
    policy_number = request.GET.get("policy_number", "")
    cursor = request.GET.get("cursor", "")
    try:
        limit = int(request.GET.get("limit", "1000"))
        _, page = roster.roster_cursor_decode(cursor)
    except (ValueError, roster.RosterCursorError):
        return JsonResponse({"detail": "Invalid `cursor` or `limit`."}, status=400)
    if not policy_number:
        return JsonResponse({"detail": "`policy_number` is required."}, status=400)
    refusal = roster.roster_misbehaviour(code=config.code, page=page)
    if refusal is not None:
        status, retry_after = refusal
        response = JsonResponse(
            {"detail": "Slow down (simulated)." if status == 429 else "Unavailable."}, status=status
        )
        response["Retry-After"] = retry_after
        return response
    page_of = (
        roster.statement_page
        if request.resolver_match and request.resolver_match.url_name == "statement"
        else roster.roster_page
    )
    return JsonResponse(page_of(code=config.code, policy_number=policy_number, cursor=cursor, limit=limit))


@csrf_exempt
@require_http_methods(["GET", "POST"])
def soap_endpoint(request: HttpRequest, code: str) -> HttpResponse:
    """SOAP face (ADR 0027): `GET ?wsdl` serves the versioned WSDL; `POST` is `SubmitEndorsements`, applied by
    the same engine, rules and idempotency ledger as the REST face, or `GetRoster` / `GetStatement`
    (reconciliation, ADR 0045)."""
    if not sandbox_enabled():
        raise Http404("The sandbox insurer is disabled.")
    # Only a registered SOAP insurer has a SOAP face: any other code is 404 and leaves no row behind (issue 11).
    if not Insurer.objects.filter(code=code, protocol=InsurerProtocol.SOAP).exists():
        raise Http404("No SOAP insurer is registered with this code.")
    if request.method == "GET":
        if not soap.is_wsdl_request(request):
            return HttpResponse("Append ?wsdl for the service description.", content_type="text/plain", status=400)
        return HttpResponse(
            soap.wsdl_document(request.build_absolute_uri(request.path)), content_type=soap.CONTENT_TYPE
        )
    config, failure = _prelude(code)
    if failure is not None:
        return soap.response_fault(
            "Server", "The sandbox insurer is temporarily unavailable (simulated).", status=503, retry_after="1"
        )
    roster_call = soap_roster.roster_operation_of(request.body)
    if roster_call is not None:
        operation, roster_request = roster_call
        answer = soap_roster.roster_operation_answer(code=config.code, operation=operation, request=roster_request)
        if answer.status_code == 500:  # a Client fault (the Server faults are 429/503)
            log.warning("sandbox.soap_client_fault", extra={"insurer": code, "fault": "invalid roster request"})
            mark_client_fault(answer)
        return answer
    try:
        raw_items = soap.parse_request(request.body)
        results = _apply(config, raw_items)
    except (soap.SoapRequestError, SandboxInputError) as exc:
        return _client_fault(code, f"Invalid request: {exc}")
    return soap.response_ok(results)


def _client_fault(code: str, message: str) -> HttpResponse:
    """A `Client` fault: HTTP 500 as SOAP 1.1 wants, but the caller's mistake, not ours — logged once at
    warning as a client fault, instead of Django's error-level "Internal Server Error" (issue 11)."""
    log.warning("sandbox.soap_client_fault", extra={"insurer": code, "fault": message[:300]})
    return mark_client_fault(soap.response_fault("Client", message))
