"""Sandbox hygiene (issue 11, item 6): the SOAP face exists only for a registered SOAP insurer, a SOAP client
fault is logged as the caller's mistake (warning), and an unusable file folder is reported once per condition
rather than with a traceback every 2 s."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.cache import cache

from apps.insurers.models import Insurer
from apps.insurers.sandbox import files
from apps.insurers.sandbox.models import SandboxApplied, SandboxConfig
from apps.insurers.sandbox.setup import SANDBOX_FILE_CODE, SANDBOX_SOAP_CODE, sandbox_register
from apps.insurers.tasks import sandbox_files

pytestmark = pytest.mark.django_db

ENVELOPE = (
    '<?xml version="1.0"?>{doctype}<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:k="urn:keel:insurer:endorsements:v1"><soap:Body><k:SubmitEndorsementsRequest>{body}'
    "</k:SubmitEndorsementsRequest></soap:Body></soap:Envelope>"
)


@pytest.mark.parametrize("code", ["anything", "sandbox-rest", "sandbox-file", "sandbox-nope"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_the_soap_face_of_a_code_that_is_no_registered_soap_insurer_is_404_and_creates_nothing(
    client, code, method
) -> None:
    sandbox_register(base_url="http://testserver", codes=("sandbox-rest", SANDBOX_FILE_CODE))
    configs = set(SandboxConfig.objects.values_list("code", flat=True))
    if method == "get":
        response = client.get(f"/sandbox/{code}/soap?wsdl")
    else:
        body = ENVELOPE.format(doctype="", body="").encode()
        response = client.post(f"/sandbox/{code}/soap", data=body, content_type="text/xml")

    assert response.status_code == 404
    assert set(SandboxConfig.objects.values_list("code", flat=True)) == configs
    assert SandboxApplied.objects.count() == 0


def test_the_wsdl_of_a_registered_soap_insurer_is_served(client) -> None:
    sandbox_register(base_url="http://testserver", codes=(SANDBOX_SOAP_CODE,))

    response = client.get(f"/sandbox/{SANDBOX_SOAP_CODE}/soap?wsdl")

    assert response.status_code == 200
    assert b'location="http://testserver/sandbox/sandbox-soap/soap"' in response.content


@pytest.mark.parametrize(
    ("doctype", "body", "fault"),
    [
        ("", "", "Invalid request: schema validation failed"),
        ('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>', "&e;", "Invalid request: DTDs are not accepted"),
    ],
)
def test_a_soap_client_fault_is_a_500_logged_at_warning_as_a_client_fault(client, caplog, doctype, body, fault) -> None:
    sandbox_register(base_url="http://testserver", codes=(SANDBOX_SOAP_CODE,))
    caplog.set_level(logging.INFO)

    response = client.post(
        f"/sandbox/{SANDBOX_SOAP_CODE}/soap",
        data=ENVELOPE.format(doctype=doctype, body=body).encode(),
        content_type="text/xml",
    )

    assert response.status_code == 500
    assert b"<faultcode>soap:Client</faultcode>" in response.content
    # The fault, then django-structlog's request line: both at warning; no "Internal Server Error" at error.
    records = [(r.name, r.levelname) for r in caplog.records if r.levelno >= logging.WARNING]
    assert records == [
        ("apps.insurers.sandbox.views", "WARNING"),
        ("django_structlog.middlewares.request", "WARNING"),
    ]
    [record] = [r for r in caplog.records if r.getMessage() == "sandbox.soap_client_fault"]
    assert record.fault.startswith(fault)


@pytest.fixture
def clock():
    """A stopped wall clock (the condition memory is wall-clock seconds), over a condition memory of its own."""
    cache.clear()
    with time_machine.travel(datetime.now(tz=UTC), tick=False) as traveller:
        yield traveller
    cache.clear()


def test_an_unusable_outbound_folder_is_reported_once_per_condition(tmp_path, caplog, clock) -> None:
    sandbox_register(base_url="http://testserver", codes=(SANDBOX_FILE_CODE,), file_root=str(tmp_path))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outbound folder should be")
    Insurer.objects.filter(code=SANDBOX_FILE_CODE).update(outbound_folder=str(blocker))
    caplog.set_level(logging.INFO, logger="apps.insurers.sandbox.files")

    for _ in range(5):  # five beat runs, 2 s apart
        assert sandbox_files() == 0
        clock.shift(2)
    quiet = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    clock.shift(files.UNUSABLE_REPEAT_SECONDS)
    sandbox_files()
    sandbox_files()
    reminded = [(r.getMessage(), r.exc_info is not None) for r in caplog.records][len(quiet) :]
    Insurer.objects.filter(code=SANDBOX_FILE_CODE).update(outbound_folder=str(tmp_path / "outbound"))
    sandbox_files()
    sandbox_files()
    recovered = [(r.getMessage(), r.exc_info is not None) for r in caplog.records][len(quiet) + len(reminded) :]

    # Both pieces of the job (batches, roster requests) read the outbound folder: one report each.
    assert quiet == [("sandbox.file_folder_unusable", True), ("sandbox.file_folder_unusable", True)]
    assert reminded == [("sandbox.file_folder_still_unusable", False), ("sandbox.file_folder_still_unusable", False)]
    assert recovered == [("sandbox.file_folder_usable_again", False), ("sandbox.file_folder_usable_again", False)]


def test_a_different_condition_is_reported_again_with_its_traceback(tmp_path, caplog, clock) -> None:
    sandbox_register(base_url="http://testserver", codes=(SANDBOX_FILE_CODE,), file_root=str(tmp_path))
    (tmp_path / "a").write_text("x")
    (tmp_path / "b").write_text("x")
    caplog.set_level(logging.INFO, logger="apps.insurers.sandbox.files")

    for blocked in ("a", "a", "b"):
        Insurer.objects.filter(code=SANDBOX_FILE_CODE).update(outbound_folder=str(tmp_path / blocked))
        files.sandbox_files_process_all()

    assert [(r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        ("sandbox.file_folder_unusable", True),
        ("sandbox.file_folder_unusable", True),
    ]
    assert [r.condition for r in caplog.records] == [
        f"StorageError: cannot list {tmp_path / 'a'}: Not a directory",
        f"StorageError: cannot list {tmp_path / 'b'}: Not a directory",
    ]
