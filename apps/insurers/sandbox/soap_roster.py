"""The sandbox insurer's SOAP roster operations (reconciliation, issue 12, ADR 0045): `GetRoster` and
`GetStatement` of the versioned WSDL, served from the same roster and statement as the REST face
(`roster.roster_page`, `roster.statement_page`) with the same throttle controls: a throttled page is a `Server`
fault with HTTP 429 and `Retry-After`, a scripted failure a `Server` fault with 503.

The request is parsed with the SOAP face's hardened parser and validated against the WSDL's own schema.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from lxml import etree

from apps.insurers.sandbox import roster
from apps.insurers.sandbox.soap import (
    _PARSER,
    CONTENT_TYPE,
    MAX_BODY_BYTES,
    SOAP_ENV,
    _envelope,
    _q,
    _text,
    request_schema,
    response_fault,
)

OPERATIONS = {"GetRosterRequest": "roster", "GetStatementRequest": "statement"}


def roster_operation_of(body: bytes) -> tuple[str, etree._Element] | None:
    """`("roster" | "statement", request element)` when `body` is a `GetRoster` / `GetStatement` envelope,
    else None (the caller handles `SubmitEndorsements`). Unparseable bodies are None too: the endorsement
    path answers them with its `Client` fault."""
    if len(body) > MAX_BODY_BYTES or b"<!DOCTYPE" in body[:1024].upper():
        return None
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError:
        return None
    payload = root.find(f"{{{SOAP_ENV}}}Body")
    if root.tag != f"{{{SOAP_ENV}}}Envelope" or payload is None or not len(payload):
        return None
    request = payload[0]
    for name, operation in OPERATIONS.items():
        if request.tag == _q(name):
            return operation, request
    return None


def _member_xml(parent: etree._Element, member: dict[str, Any]) -> None:
    node = etree.SubElement(parent, _q("member"))
    etree.SubElement(node, _q("employeeCode")).text = member["employee_code"]
    etree.SubElement(node, _q("firstName")).text = member["first_name"]
    etree.SubElement(node, _q("lastName")).text = member["last_name"]
    if member.get("date_of_birth"):
        etree.SubElement(node, _q("dateOfBirth")).text = member["date_of_birth"]
    etree.SubElement(node, _q("sumInsured")).text = str(member["sum_insured"])
    if member.get("start_date"):
        etree.SubElement(node, _q("startDate")).text = member["start_date"]


def roster_operation_answer(*, code: str, operation: str, request: etree._Element) -> HttpResponse:
    """Answer one `GetRoster` / `GetStatement` request of sandbox `code` (a fault for a bad request, a throttled
    or failing page)."""
    document = etree.ElementTree(etree.fromstring(etree.tostring(request)))
    schema = request_schema()
    if not schema.validate(document):
        error = schema.error_log.last_error
        return response_fault("Client", f"Invalid request: {error.message if error else 'invalid'}")
    node = document.getroot()
    policy_number = _text(node, "policyNumber") or ""
    cursor = _text(node, "cursor") or ""
    limit = int(_text(node, "limit") or "1000")
    try:
        _, page = roster.roster_cursor_decode(cursor)
    except roster.RosterCursorError:
        return response_fault("Client", "Invalid request: malformed cursor")
    refusal = roster.roster_misbehaviour(code=code, page=page)
    if refusal is not None:
        status, retry_after = refusal
        message = "Slow down (simulated)." if status == 429 else "Unavailable (simulated)."
        return response_fault("Server", message, status=status, retry_after=retry_after)
    if operation == "roster":
        body = roster.roster_page(code=code, policy_number=policy_number, cursor=cursor, limit=limit)
        payload = etree.Element(_q("GetRosterResponse"))
        for member in body["members"]:
            _member_xml(payload, member)
    else:
        body = roster.statement_page(code=code, policy_number=policy_number, cursor=cursor, limit=limit)
        payload = etree.Element(_q("GetStatementResponse"))
        for charge in body["charges"]:
            node = etree.SubElement(payload, _q("charge"))
            etree.SubElement(node, _q("endorsementId")).text = str(charge["endorsement_id"])
            etree.SubElement(node, _q("amount")).text = str(charge["amount"])
    etree.SubElement(payload, _q("page")).text = str(body["page"])
    if body.get("next_cursor"):
        etree.SubElement(payload, _q("nextCursor")).text = body["next_cursor"]
    if body.get("total") is not None:
        etree.SubElement(payload, _q("total")).text = str(body["total"])
    return HttpResponse(_envelope(payload), content_type=CONTENT_TYPE)
