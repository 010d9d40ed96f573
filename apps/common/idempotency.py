"""`Idempotency-Key` for creating POSTs (SPEC §2, docs/adr/0004-idempotency.md).

1. The key is claimed by INSERTing an `in_progress` row in its own committed transaction; the unique
   constraint on (partner, key) makes exactly one concurrent request win.
2. The winner runs the view and, in the same transaction as the view's own writes, stores the response
   (2xx only). Any error response or exception releases the key, so a client may simply retry.
3. A later request with the same key: different body → 422; still running → 409; completed → the stored
   status and body with `Idempotent-Replayed: true`. A claim left by a crashed process expires after
   `IDEMPOTENCY_LOCK_SECONDS` and may be taken over.
4. "Same body" is judged on what the request means, not its bytes (issue 8, kind 8; ADR 0017): a JSON body
   canonicalised (key order, white space); a form or multipart body by its parsed fields and each file's
   SHA-256 — a multipart boundary differs on every send. A body too deeply nested to canonicalise is hashed
   as its bytes rather than recursed into.
5. A stored response is replayed only to a key that may see it (issue 8, kind 9): keys are claimed per
   partner *and* key binding (`requester_scope`), so a key of another employer that reuses an
   Idempotency-Key has a request of its own (the view then answers, typically 404), stored and replayed to
   its own retries; it never sees the other request's response nor learns it exists (no 422 for a different
   body). A key that may see a completed response of another binding — acting for all the partner's
   employers, bound to at least the requester's employers, or to the `employer` the body names — gets it
   replayed (`foreign_replay`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any, Literal

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from apps.common.errors import ProblemError
from apps.common.models import IdempotencyRecord, IdempotencyStatus

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
REPLAYED_HEADER = "Idempotent-Replayed"
# The member of a stored response body that names the employer it belongs to (replays respect tenancy).
RESPONSE_EMPLOYER_FIELD = "employer"
_STORED_HEADERS = ("Location",)


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: Literal["proceed", "replay", "in_progress", "mismatch"]
    record: IdempotencyRecord


def request_fingerprint(*, method: str, path: str, body: bytes) -> str:
    """HMAC-SHA-256 (hex, 64 chars) of method, path and body; a JSON body is canonicalised first, so key order
    and white space do not make the "same" request look different. Never raises: a body that is not JSON, or
    one nested too deeply to canonicalise (RecursionError), is hashed as its raw bytes."""
    with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
        body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    # Keyed (HMAC): bodies can carry a PAN, and a plain hash of a mostly-known body would let anyone who
    # reads the table guess it.
    digest = hmac.new(settings.SECRET_KEY.encode(), digestmod=hashlib.sha256)
    for part in (method.encode(), b"\0", path.encode(), b"\0", body):
        digest.update(part)
    return digest.hexdigest()


_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def form_fingerprint_body(data: Any) -> bytes:
    """The canonical bytes of a parsed form (`request.data`: a QueryDict of fields and uploaded files):
    fields sorted by name with their values in order, each file as its SHA-256 and size (file names and the
    multipart boundary do not count). Files are read in chunks and rewound for the view."""
    items: list[list[Any]] = []
    for name in sorted(str(k) for k in data):
        values = data.getlist(name) if hasattr(data, "getlist") else [data[name]]
        parts: list[list[Any]] = []
        for value in values:
            if isinstance(value, UploadedFile):
                digest = hashlib.sha256()
                for chunk in value.chunks():
                    digest.update(chunk)
                value.seek(0)
                parts.append(["file", digest.hexdigest(), value.size])
            else:
                parts.append(["field", str(value)])
        items.append([name, parts])
    return json.dumps(["form", items], separators=(",", ":")).encode()


def request_fingerprint_of(request: Request) -> str:
    """`request_fingerprint` of a DRF request: forms and multipart uploads by their parsed fields and files'
    SHA-256 (a multipart boundary changes on every send), anything else by its body."""
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    body = form_fingerprint_body(request.data) if content_type in _FORM_TYPES else request.body
    return request_fingerprint(method=request.method or "POST", path=request.path, body=body)


def employer_binding(user: Any) -> list[int] | None:
    """The employers a caller is bound to (sorted ids), or None for a key acting for all its partner's."""
    if getattr(user, "all_employers", False):
        return None
    return sorted(int(i) for i in getattr(user, "employer_ids", ()))


def requester_scope_of(employer_ids: list[int] | None) -> str:
    """The stored scope of a binding: "all" for a key acting for all its partner's employers, else "employers:"
    and 40 hex digits of SHA-256 over the sorted ids (bounded, whatever the number of employers)."""
    if employer_ids is None:
        return "all"
    digest = hashlib.sha256(",".join(str(i) for i in sorted(employer_ids)).encode()).hexdigest()
    return f"employers:{digest[:40]}"


def replay_visible_to(user: Any, body: Any, requester_employer_ids: list[int] | None = None) -> bool:
    """May this caller (a `Principal` of the record's partner) see a stored response? Yes when it acts for
    all the partner's employers, or for every employer the key that made the request was bound to
    (`requester_employer_ids`; None = all employers), or when the body names one `employer` it may act for.
    So a key bound to employer 2 never receives what a key bound to employer 1 created — an endorsement, a
    webhook endpoint, anything (issue 8, kind 9; newcomer trial)."""
    binding = employer_binding(user)
    if binding is None:
        return True
    if requester_employer_ids is not None and set(requester_employer_ids) <= set(binding):
        return True
    employer = body.get(RESPONSE_EMPLOYER_FIELD) if isinstance(body, dict) else None
    return isinstance(employer, int) and not isinstance(employer, bool) and employer in binding


def foreign_replay(
    *, partner_id: int, key: str, fingerprint: str, user: Any, requester_scope: str
) -> IdempotencyRecord | None:
    """A completed record of the same partner, key and request made under another key binding that `user` may
    see (`replay_visible_to`), or None: a platform key retrying what an employer key sent gets that response.
    One indexed read; records of bindings `user` may not see are ignored (they neither replay nor refuse)."""
    candidates = IdempotencyRecord.objects.filter(
        partner_id=partner_id,
        key=key,
        fingerprint=fingerprint,
        status=IdempotencyStatus.COMPLETED,
        expires_at__gt=timezone.now(),
    ).exclude(requester_scope=requester_scope)
    for record in candidates:
        body = json.loads(record.response_body) if record.response_body else None
        if replay_visible_to(user, body, record.requester_employer_ids):
            return record
    return None


def idempotency_claim(
    *, partner_id: int, key: str, fingerprint: str, requester_employer_ids: list[int] | None = None
) -> Claim:
    """Claim `key` for one request of `partner_id` made under a key bound to `requester_employer_ids` (None =
    all employers). Each binding has its own keys (the unique constraint includes `requester_scope`)."""
    scope = requester_scope_of(requester_employer_ids)
    now = timezone.now()
    lock_until = now + timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS)
    for _ in range(3):
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    partner_id=partner_id,
                    key=key,
                    fingerprint=fingerprint,
                    requester_employer_ids=requester_employer_ids,
                    requester_scope=scope,
                    status=IdempotencyStatus.IN_PROGRESS,
                    locked_until=lock_until,
                    expires_at=now + settings.IDEMPOTENCY_TTL,
                )
            return Claim("proceed", record)
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(partner_id=partner_id, key=key, requester_scope=scope).first()
            if existing is None:
                continue  # released between our insert and our read: try again
            if existing.expires_at <= now:
                IdempotencyRecord.objects.filter(pk=existing.pk, expires_at__lte=now).delete()
                continue
            if existing.fingerprint != fingerprint:
                return Claim("mismatch", existing)
            if existing.status == IdempotencyStatus.COMPLETED:
                return Claim("replay", existing)
            if existing.locked_until > now:
                return Claim("in_progress", existing)
            # Abandoned by a crashed request: take it over with a conditional update.
            taken = IdempotencyRecord.objects.filter(
                pk=existing.pk, status=IdempotencyStatus.IN_PROGRESS, locked_until=existing.locked_until
            ).update(locked_until=lock_until)
            if taken:
                existing.locked_until = lock_until
                return Claim("proceed", existing)
            return Claim("in_progress", existing)
    return Claim("in_progress", IdempotencyRecord(partner_id=partner_id, key=key, requester_scope=scope))


_SHOWN_ONCE = "_keel_shown_once"


def shown_once(response: Response, *fields: str) -> Response:
    """Mark top-level `fields` of `response.data` as shown once (a secret): the idempotency record stores them
    as null, so a replay answers the same resource without them and the database never holds them in clear
    (ADR 0042). Returns `response`."""
    setattr(response, _SHOWN_ONCE, fields)
    return response


def _replayable(response: Response) -> Any:
    data = response.data
    hidden = getattr(response, _SHOWN_ONCE, ())
    if hidden and isinstance(data, dict):
        data = {**data, **{name: None for name in hidden if name in data}}
    return data


def idempotency_complete(*, record: IdempotencyRecord, response: Response) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        status=IdempotencyStatus.COMPLETED,
        response_status=response.status_code,
        response_body=json.dumps(_replayable(response), cls=JSONEncoder),
        response_headers={h: response[h] for h in _STORED_HEADERS if h in response},
    )


def idempotency_release(*, record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, status=IdempotencyStatus.IN_PROGRESS).delete()


def idempotency_purge_expired(*, batch_size: int = 5000) -> int:
    ids = list(
        IdempotencyRecord.objects.filter(expires_at__lte=timezone.now()).values_list("pk", flat=True)[:batch_size]
    )
    return IdempotencyRecord.objects.filter(pk__in=ids).delete()[0] if ids else 0


def _replayed(record: IdempotencyRecord) -> Response:
    """The stored response of `record`, marked `Idempotency-Replayed: true`."""
    body = json.loads(record.response_body) if record.response_body else None
    return Response(body, status=record.response_status, headers={**record.response_headers, REPLAYED_HEADER: "true"})


def _refuse_unless_claimed(outcome: str) -> None:
    """Raise the problem for a claim this request may not run under: 422 `idempotency-key-reused` (another body),
    409 `idempotency-key-in-progress` with `Retry-After: 1` (the first request still runs)."""
    if outcome == "mismatch":
        raise ProblemError(
            status_code=422,
            detail=f"This {HEADER} was used with a different request body.",
            slug="idempotency-key-reused",
        )
    if outcome == "in_progress":
        raise ProblemError(
            status_code=409,
            detail=f"A request with this {HEADER} is still being processed; retry shortly.",
            slug="idempotency-key-in-progress",
            headers={"Retry-After": "1"},
        )


def idempotent(view_method: Callable[..., Response]) -> Callable[..., Response]:
    """Decorate a creating `post` of a partner API view (request.user carries `partner_id`)."""

    @wraps(view_method)
    def wrapper(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return view_method(self, request, *args, **kwargs)
        if not key.strip() or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise ProblemError(
                status_code=422,
                detail=f"{HEADER} must be 1–{MAX_KEY_LENGTH} printable characters.",
                slug="invalid-idempotency-key",
            )
        fingerprint = request_fingerprint_of(request)
        partner_id = int(getattr(request.user, "partner_id"))  # noqa: B009
        binding = employer_binding(request.user)
        foreign = foreign_replay(
            partner_id=partner_id,
            key=key,
            fingerprint=fingerprint,
            user=request.user,
            requester_scope=requester_scope_of(binding),
        )
        if foreign is not None:
            return _replayed(foreign)
        claim = idempotency_claim(
            partner_id=partner_id, key=key, fingerprint=fingerprint, requester_employer_ids=binding
        )
        if claim.outcome == "replay":
            return _replayed(claim.record)
        _refuse_unless_claimed(claim.outcome)
        record = claim.record
        try:
            with transaction.atomic():
                response = view_method(self, request, *args, **kwargs)
                if 200 <= response.status_code < 300:
                    idempotency_complete(record=record, response=response)
                else:
                    transaction.set_rollback(True)
        except BaseException:
            idempotency_release(record=record)
            raise
        if not 200 <= response.status_code < 300:
            idempotency_release(record=record)
        return response

    return wrapper
