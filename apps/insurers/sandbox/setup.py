"""Registering the built-in sandbox insurer (called by `seed_demo` and by tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from django.db import transaction

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.insurers.callback_secrets import (
    CallbackSecretError,
    callback_secret_generate,
    callback_secret_open,
    callback_secret_seal,
)
from apps.insurers.contracts import InsurerAuditAction
from apps.insurers.models import Insurer, InsurerProtocol
from apps.insurers.sandbox.models import SandboxConfig

SANDBOX_REST_CODE = "sandbox-rest"


def generate_callback_secret() -> str:
    """A fresh plaintext `whsec_…` secret (seal it before storing: `apps.insurers.callback_secrets`)."""
    return callback_secret_generate()


SANDBOX_SOAP_CODE = "sandbox-soap"
SANDBOX_FILE_CODE = "sandbox-file"
SANDBOX_NAMES = {
    SANDBOX_REST_CODE: ("Sandbox Insurer (REST)", InsurerProtocol.REST),
    SANDBOX_SOAP_CODE: ("Sandbox Insurer (SOAP)", InsurerProtocol.SOAP),
    SANDBOX_FILE_CODE: ("Sandbox Insurer (files)", InsurerProtocol.FILE),
}


def _wanted(code: str, base: str, file_root: str) -> dict[str, str]:
    if code == SANDBOX_SOAP_CODE:
        return {"endpoint": f"{base}/sandbox/{code}/soap", "outbound_folder": "", "inbound_folder": ""}
    if code == SANDBOX_FILE_CODE:
        root = file_root.rstrip("/")
        return {
            "endpoint": "",
            "outbound_folder": f"{root}/{code}/outbound",
            "inbound_folder": f"{root}/{code}/inbound",
        }
    return {"endpoint": f"{base}/sandbox/{code}", "outbound_folder": "", "inbound_folder": ""}


@transaction.atomic
def sandbox_register(
    *, base_url: str, codes: tuple[str, ...] = (SANDBOX_REST_CODE,), file_root: str = "insurers"
) -> list[Insurer]:
    """Create or update the sandbox insurers `codes` (any of `sandbox-rest`, `sandbox-soap`, `sandbox-file`),
    in that order, with working configuration: REST and SOAP endpoints under `base_url` (this deployment
    serves them), the file insurer's folders under `file_root` (relative → under `var/`), a fresh `whsec_`
    callback secret when there is none, and a sandbox configuration whose callbacks come back here.
    Idempotent: running it again changes only what differs (e.g. a new base URL), each change audited."""
    base = base_url.rstrip("/")
    actor = Actor.system("sandbox_register")
    registered: list[Insurer] = []
    for code in codes:
        name, protocol = SANDBOX_NAMES[code]
        insurer, created = Insurer.objects.select_for_update().get_or_create(
            code=code, defaults={"name": name, "protocol": protocol}
        )
        fields = ["protocol", "endpoint", "outbound_folder", "inbound_folder", "callback_secret"]
        before = {f: getattr(insurer, f) for f in fields}
        insurer.protocol = protocol
        for field, value in _wanted(code, base, file_root).items():
            setattr(insurer, field, value)
        if not insurer.callback_secret:
            insurer.callback_secret = callback_secret_seal(generate_callback_secret(), insurer_code=code)
        after = {f: getattr(insurer, f) for f in fields}
        if created or before != after:
            insurer.save(update_fields=fields)
            audit_record(
                actor=actor,
                action=InsurerAuditAction.SANDBOX_REGISTERED,
                object_type="insurer",
                object_id=insurer.pk,
                before=None if created else before,
                after=after,
            )
        config, _ = SandboxConfig.objects.get_or_create(code=code)
        config.callback_url = f"{base}/api/v1/insurer-callbacks/{code}"
        # The sandbox signs with the insurer's secret, sealed again under its own column's context (ADR 0044).
        secret = callback_secret_open(insurer.callback_secret, insurer_code=code)
        try:
            current = callback_secret_open(config.callback_secret, insurer_code=code, owner="sandbox")
        except CallbackSecretError:
            current = ""
        if current != secret:
            config.callback_secret = callback_secret_seal(secret, insurer_code=code, owner="sandbox")
        config.save(update_fields=["callback_url", "callback_secret", "updated_at"])
        registered.append(insurer)
    return registered


SANDBOX_CODE_PREFIX = "sandbox-"
_SANDBOX_PATHS = ("/sandbox/", "/api/v1/insurer-callbacks/")


def _rebased(url: str, base: str) -> str:
    """`url` moved onto `base` when it is an absolute address of this app's sandbox routes, else unchanged."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.path.startswith(_SANDBOX_PATHS):
        return url
    query = f"?{parts.query}" if parts.query else ""
    return f"{base}{parts.path}{query}"


@transaction.atomic
def sandbox_addresses_repair(*, base_url: str) -> list[tuple[str, str, str]]:
    """Point every built-in sandbox insurer (code `sandbox-…`, endpoint on this app's `/sandbox/` routes) and
    every sandbox callback URL at `base_url` — e.g. after `make run KEEL_PORT=8130` or a `make demo` that
    registered a temporary port (issue 8, kind 14; ADR 0019). Returns `(code, before, after)` per change,
    each audited as `insurer.sandbox_address_repaired`. Addresses elsewhere (a real WSDL, an SFTP folder)
    are left alone."""
    base = base_url.rstrip("/")
    actor = Actor.system("sandbox_addresses_repair")
    changes: list[tuple[str, str, str]] = []
    for insurer in Insurer.objects.select_for_update().filter(code__startswith=SANDBOX_CODE_PREFIX).order_by("code"):
        after = _rebased(insurer.endpoint, base)
        if after != insurer.endpoint:
            changes.append((insurer.code, insurer.endpoint, after))
            audit_record(
                actor=actor,
                action=InsurerAuditAction.SANDBOX_ADDRESS_REPAIRED,
                object_type="insurer",
                object_id=insurer.pk,
                before={"endpoint": insurer.endpoint},
                after={"endpoint": after},
            )
            insurer.endpoint = after
            insurer.save(update_fields=["endpoint"])
    for config in SandboxConfig.objects.select_for_update().order_by("code"):
        after = _rebased(config.callback_url, base)
        if after != config.callback_url:
            changes.append((f"{config.code} callbacks", config.callback_url, after))
            config.callback_url = after
            config.save(update_fields=["callback_url", "updated_at"])
    return changes


_ADDRESS_FIELDS = ("endpoint", "outbound_folder", "inbound_folder")


@contextmanager
def sandbox_registered_temporarily(
    *, base_url: str, codes: tuple[str, ...], file_root: str = "insurers"
) -> Iterator[list[Insurer]]:
    """`sandbox_register(base_url=…, codes=…)` for the duration of the block, then — in `finally`, however the
    block ends — every address it changed put back: each insurer's endpoint and folders and each sandbox
    callback URL, as they were before (issue 11: `make demo` registered its temporary server's port and left a
    running `make run` sending to a dead port). Each restored insurer is audited as
    `insurer.sandbox_address_repaired`. Insurers the block created had no address before and keep theirs."""
    before = {
        insurer.code: {f: getattr(insurer, f) for f in _ADDRESS_FIELDS}
        for insurer in Insurer.objects.filter(code__in=codes)
    }
    callbacks = dict(SandboxConfig.objects.filter(code__in=codes).values_list("code", "callback_url"))
    try:
        yield sandbox_register(base_url=base_url, codes=codes, file_root=file_root)
    finally:
        _addresses_restore(before, callbacks)


@transaction.atomic
def _addresses_restore(before: dict[str, dict[str, str]], callbacks: dict[str, str]) -> None:
    actor = Actor.system("sandbox_registered_temporarily")
    for insurer in Insurer.objects.select_for_update().filter(code__in=sorted(before)).order_by("code"):
        now = {f: getattr(insurer, f) for f in _ADDRESS_FIELDS}
        if now == before[insurer.code]:
            continue
        for field, value in before[insurer.code].items():
            setattr(insurer, field, value)
        insurer.save(update_fields=list(_ADDRESS_FIELDS))
        audit_record(
            actor=actor,
            action=InsurerAuditAction.SANDBOX_ADDRESS_REPAIRED,
            object_type="insurer",
            object_id=insurer.pk,
            before=now,
            after=before[insurer.code],
        )
    for config in SandboxConfig.objects.select_for_update().filter(code__in=sorted(callbacks)).order_by("code"):
        if config.callback_url != callbacks[config.code]:
            config.callback_url = callbacks[config.code]
            config.save(update_fields=["callback_url", "updated_at"])
