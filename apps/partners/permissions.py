"""Scope checks. A view names `read_scope` (safe methods) and `write_scope` (everything else)."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from apps.partners.contracts import Principal


class HasScope(permissions.BasePermission):
    message = "These credentials do not have the scope this action needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            return False  # → 401 via NotAuthenticated, because the authenticator declares a header
        scope = (
            getattr(view, "read_scope", None)
            if request.method in permissions.SAFE_METHODS
            else getattr(view, "write_scope", None)
        )
        if scope is None:
            return True
        if not principal.has_scope(scope):
            self.message = f"This {principal.credential_name} lacks the `{scope}` scope."
            return False
        return True
