"""drf-spectacular: describe `Authorization: Bearer <token>` as an OAuth2 client-credentials scheme."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

from apps.partners.contracts import Scope


class BearerTokenAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "apps.oauth.authentication.BearerTokenAuthentication"
    name = "OAuth2"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "oauth2",
            "description": "OAuth2 client credentials (RFC 6749 §4.4): `POST /oauth/token` returns a JWT access "
            "token (RFC 9068, ES256, keys at `/.well-known/jwks.json`); send it as `Authorization: Bearer <token>`.",
            "flows": {
                "clientCredentials": {
                    "tokenUrl": "/oauth/token",
                    "scopes": {scope.value: str(scope.label) for scope in Scope},
                }
            },
        }
