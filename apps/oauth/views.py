"""`POST /oauth/token` (RFC 6749 §4.4 client credentials; errors per §5.2) and `GET /.well-known/jwks.json`.

Plain Django views, not DRF: the token endpoint speaks OAuth's own form-encoded request and JSON error shape,
not problem+json, and takes no partner credentials but the client's.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import unquote_plus

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from apps.common.errors import problem_response
from apps.oauth.contracts import TokenError
from apps.oauth.keys import jwks
from apps.oauth.models import OAuthClient
from apps.oauth.services import secret_hash
from apps.oauth.tokens import access_token_mint
from apps.partners.authentication import touch_last_used

GRANT_TYPE = "client_credentials"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_FIELD_LENGTH = 200
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class _TokenRequestError(Exception):
    def __init__(self, error: TokenError, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def _error_response(exc: _TokenRequestError) -> JsonResponse:
    response = JsonResponse({"error": exc.error.value, "error_description": exc.description}, status=exc.status)
    for name, value in NO_STORE.items():
        response[name] = value
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Basic realm="keel"'
    if exc.status == 405:
        response["Allow"] = "POST"
    return response


def _single(request: HttpRequest, name: str) -> str | None:
    values = request.POST.getlist(name)
    if len(values) > 1:
        raise _TokenRequestError(TokenError.INVALID_REQUEST, f"`{name}` is given more than once.")
    if values and len(values[0]) > MAX_FIELD_LENGTH:
        raise _TokenRequestError(TokenError.INVALID_REQUEST, f"`{name}` is too long.")
    return values[0] if values else None


def _client_credentials(request: HttpRequest) -> tuple[str, str]:
    """(client_id, client_secret) from HTTP Basic (RFC 6749 §2.3.1, form-encoded parts) or
    the form body; never both."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    form_id, form_secret = _single(request, "client_id"), _single(request, "client_secret")
    if header:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise _TokenRequestError(TokenError.INVALID_CLIENT, "Authenticate the client with HTTP Basic.", status=401)
        if form_secret is not None:
            raise _TokenRequestError(TokenError.INVALID_REQUEST, "Authenticate the client one way, not two.")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise _TokenRequestError(
                TokenError.INVALID_CLIENT, "The Basic credentials are not valid base64.", status=401
            ) from None
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise _TokenRequestError(TokenError.INVALID_CLIENT, "The Basic credentials lack a secret.", status=401)
        return unquote_plus(client_id), unquote_plus(secret)
    if not form_id or not form_secret:
        detail = "Authenticate the client (HTTP Basic, or client_id and client_secret in the form)."
        raise _TokenRequestError(TokenError.INVALID_CLIENT, detail, status=401)
    return form_id, form_secret


def _authenticate_client(client_id: str, secret: str) -> OAuthClient:
    client = OAuthClient.objects.select_related("partner").filter(client_id=client_id[:MAX_FIELD_LENGTH]).first()
    # Hash even for an unknown client so both answers take the same time.
    presented = secret_hash(secret[:MAX_FIELD_LENGTH])
    if client is None or not hmac.compare_digest(presented, client.secret_hash):
        raise _TokenRequestError(TokenError.INVALID_CLIENT, "Unknown client or wrong secret.", status=401)
    if client.revoked_at is not None:
        raise _TokenRequestError(TokenError.INVALID_CLIENT, "The client has been revoked.", status=401)
    if not client.partner.is_active:
        raise _TokenRequestError(TokenError.INVALID_CLIENT, "The partner is not active.", status=401)
    return client


@csrf_exempt
def token(request: HttpRequest) -> JsonResponse:
    """Client credentials grant: 200 `{access_token, token_type: "Bearer", expires_in, scope}`; errors are
    400/401 `{error, error_description}` with RFC 6749 §5.2 codes, and a method other than POST is 405 in the same
    shape (`invalid_request`, `Allow: POST`); never cached (`no-store`)."""
    try:
        if request.method != "POST":
            raise _TokenRequestError(
                TokenError.INVALID_REQUEST, "The token endpoint takes POST (RFC 6749 §3.2).", status=405
            )
        if request.content_type != FORM_CONTENT_TYPE:
            raise _TokenRequestError(TokenError.INVALID_REQUEST, f"Send the request as {FORM_CONTENT_TYPE}.")
        client_id, secret = _client_credentials(request)
        client = _authenticate_client(client_id, secret)
        grant_type = _single(request, "grant_type")
        if not grant_type:
            raise _TokenRequestError(TokenError.INVALID_REQUEST, "`grant_type` is required.")
        if grant_type != GRANT_TYPE:
            raise _TokenRequestError(TokenError.UNSUPPORTED_GRANT_TYPE, f"Only `grant_type={GRANT_TYPE}` is supported.")
        requested = _single(request, "scope")
        scopes = sorted(set(requested.split())) if requested is not None and requested.strip() else client.scopes
        beyond = [s for s in scopes if s not in client.scopes]
        if beyond:
            raise _TokenRequestError(
                TokenError.INVALID_SCOPE, f"The client does not hold the scope(s): {' '.join(beyond)}."
            )
    except _TokenRequestError as exc:
        return _error_response(exc)
    minted = access_token_mint(client=client, scopes=list(scopes))
    touch_last_used(client)  # a token request is a use: the rule of every request (at most once a minute)
    response = JsonResponse(
        {"access_token": minted.token, "token_type": "Bearer", "expires_in": minted.expires_in, "scope": minted.scope}
    )
    for name, value in NO_STORE.items():
        response[name] = value
    return response


def jwks_view(request: HttpRequest) -> JsonResponse:
    """The public keys that verify Keel's access tokens (RFC 7517 JWK Set), the retiring ones included; a method
    other than GET/HEAD is a problem+json 405 with `Allow`."""
    if request.method not in ("GET", "HEAD"):
        refused = problem_response(request, 405, f"Method {(request.method or '')[:16]} is not allowed here; use GET.")
        refused["Allow"] = "GET, HEAD"
        return refused
    response = JsonResponse(jwks())
    response["Cache-Control"] = "public, max-age=60"
    return response
