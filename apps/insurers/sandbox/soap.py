"""The sandbox insurer's SOAP face: SOAP 1.1 document/literal over real HTTP, served with lxml from the same
versioned WSDL Keel's gateway uses (ADR 0027: lxml, not spyne).

`GET /sandbox/<code>/soap?wsdl` → the WSDL with this deployment's address; `POST /sandbox/<code>/soap` →
`SubmitEndorsements`. The request is parsed with a hardened parser (no DTD, no entities, no network, no huge
trees) and validated against the WSDL's own schema, then applied by the same engine and idempotency ledger as
the REST face (`sandbox_apply`): same latency, failure rate (503 + `Retry-After` with a `Server` fault),
rejection rules and sync/callback modes. A request the schema refuses is a `Client` fault (HTTP 500, as SOAP
1.1 wants for faults).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.http import HttpRequest, HttpResponse
from lxml import etree

from apps.insurers.gateways.soap import NAMESPACE, WSDL_PATH

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XSD = "http://www.w3.org/2001/XMLSchema"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
CONTENT_TYPE = "text/xml; charset=utf-8"
MAX_BODY_BYTES = 5 * 1024 * 1024

_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_blank_text=True
)


class SoapRequestError(ValueError):
    """The request is not a valid `SubmitEndorsements` call (→ a `Client` fault)."""


@lru_cache(maxsize=1)
def _wsdl_tree() -> etree._ElementTree:
    return etree.parse(str(WSDL_PATH), _PARSER)


@lru_cache(maxsize=1)
def request_schema() -> etree.XMLSchema:
    """The XML Schema embedded in the WSDL's `types`, compiled once."""
    schema = _wsdl_tree().find(f"{{{WSDL_NS}}}types/{{{XSD}}}schema")
    if schema is None:
        raise RuntimeError(f"{WSDL_PATH} has no embedded schema")
    # A standalone copy: the schema declares the namespaces its QName values use (tns:…) itself.
    return etree.XMLSchema(etree.ElementTree(etree.fromstring(etree.tostring(schema))))


def wsdl_document(address: str) -> bytes:
    """The versioned WSDL with its service address set to `address`."""
    tree = etree.ElementTree(etree.fromstring(etree.tostring(_wsdl_tree())))
    for node in tree.iter(f"{{{WSDL_SOAP}}}address"):
        node.set("location", address)
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _q(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def _text(parent: etree._Element, name: str) -> str | None:
    node = parent.find(_q(name))
    return node.text if node is not None else None


def parse_request(body: bytes) -> list[dict[str, Any]]:
    """A SOAP envelope → the REST-shaped item dicts `parse_items` takes, with every field the WSDL's
    `Endorsement` carries (the member's names, gender and e-mail, `sumInsured` in paise), so the roster follows
    SOAP additions as it follows REST ones (issue 11: dropping them left the SOAP roster empty and every member
    `missing_at_insurer`). Raises `SoapRequestError`."""
    if len(body) > MAX_BODY_BYTES:
        raise SoapRequestError("request body too large")
    if b"<!DOCTYPE" in body[:1024].upper():
        raise SoapRequestError("DTDs are not accepted")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise SoapRequestError(f"not well-formed XML: {exc}") from exc
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapRequestError("expected a SOAP 1.1 Envelope")
    request = root.find(f"{{{SOAP_ENV}}}Body/{_q('SubmitEndorsementsRequest')}")
    if request is None:
        raise SoapRequestError("expected SubmitEndorsementsRequest in the SOAP Body")
    document = etree.ElementTree(etree.fromstring(etree.tostring(request)))
    schema = request_schema()
    if not schema.validate(document):
        error = schema.error_log.last_error
        raise SoapRequestError(f"schema validation failed: {error.message if error else 'invalid'}")
    items: list[dict[str, Any]] = []
    for node in document.getroot().iterfind(_q("endorsement")):
        member = node.find(_q("member"))
        assert member is not None  # the schema requires it
        items.append(
            {
                "idempotency_key": _text(node, "idempotencyKey"),
                "endorsement_id": int(_text(node, "endorsementId") or 0),
                "kind": _text(node, "kind"),
                "policy_number": _text(node, "policyNumber") or "",
                "effective_date": _text(node, "effectiveDate"),
                "sum_insured": _text(node, "sumInsured"),
                "premium_amount": _text(node, "premiumAmount"),
                "premium_direction": _text(node, "premiumDirection"),
                "member": {
                    "employee_code": _text(member, "employeeCode") or "",
                    "first_name": _text(member, "firstName") or "",
                    "last_name": _text(member, "lastName") or "",
                    "date_of_birth": _text(member, "dateOfBirth"),
                    "gender": _text(member, "gender") or "",
                    "email": _text(member, "email") or "",
                },
            }
        )
    return items


def _envelope(payload: etree._Element) -> bytes:
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV, "tns": NAMESPACE})
    etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body").append(payload)
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))


def response_ok(results: list[dict[str, Any]]) -> HttpResponse:
    payload = etree.Element(_q("SubmitEndorsementsResponse"))
    for result in results:
        node = etree.SubElement(payload, _q("result"))
        etree.SubElement(node, _q("idempotencyKey")).text = result["idempotency_key"]
        etree.SubElement(node, _q("outcome")).text = result["outcome"]
        if result.get("insurer_reference"):
            etree.SubElement(node, _q("insurerReference")).text = result["insurer_reference"]
        if result.get("reason"):
            etree.SubElement(node, _q("reason")).text = result["reason"]
        etree.SubElement(node, _q("replayed")).text = "true" if result.get("replayed") else "false"
    return HttpResponse(_envelope(payload), content_type=CONTENT_TYPE)


def response_fault(code: str, message: str, *, status: int = 500, retry_after: str | None = None) -> HttpResponse:
    """A SOAP 1.1 fault; `code` is `Client` (the request is wrong) or `Server` (try again later)."""
    fault = etree.Element(f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"soap:{code}"
    etree.SubElement(fault, "faultstring").text = message
    response = HttpResponse(_envelope(fault), content_type=CONTENT_TYPE, status=status)
    if retry_after:
        response["Retry-After"] = retry_after
    return response


def is_wsdl_request(request: HttpRequest) -> bool:
    return request.method == "GET" and "wsdl" in {k.lower() for k in request.GET}
