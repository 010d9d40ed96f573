"""Base classes every partner-facing API view builds on: API-key auth, scopes, per-key rate limits."""

from __future__ import annotations

from typing import Any

from django import forms
from rest_framework import generics, views
from rest_framework.request import Request
from rest_framework.response import Response

from apps.common.actors import Actor
from apps.common.errors import DomainValidationError, ProblemError
from apps.common.logging import current_correlation_id
from apps.common.query import documented_query_parameters, refuse_empty_values, refuse_unknown_parameters
from apps.partners.authentication import touch_last_used
from apps.partners.contracts import Principal
from apps.partners.models import APIKey
from apps.partners.ratelimit import RateDecision, rate_limit_hit


def multi_value_filters(filterset_class: Any) -> frozenset[str]:
    """The query parameters of a django-filter FilterSet that take several values (`?type=a&type=b`)."""
    if filterset_class is None:
        return frozenset()
    multiple = (forms.MultipleChoiceField, forms.ModelMultipleChoiceField)
    return frozenset(name for name, f in filterset_class.base_filters.items() if issubclass(f.field_class, multiple))


class RateLimitedMixin:
    """Counts every authenticated request against its key's limits and sets the RateLimit-* headers; refuses a
    query parameter the operation does not take (422 naming it: the operation's documented parameters are the
    allow-list, `apps.common.query`, ADR 0064) and a single-valued one given twice (422 naming it: which one would
    count is a guess)."""

    # Query parameters a view reads with `getlist` besides its FilterSet's multiple-choice filters.
    multi_value_parameters: frozenset[str] = frozenset()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        request.rate_decision = None  # type: ignore[attr-defined]
        self.perform_authentication(request)  # type: ignore[attr-defined]
        principal = request.user
        if isinstance(principal, Principal):
            decision = rate_limit_hit(key_prefix=principal.key_prefix, limits=principal.rate_limits)
            request.rate_decision = decision  # type: ignore[attr-defined]
            if isinstance(request.auth, APIKey):
                touch_last_used(request.auth)
            if not decision.allowed:
                raise ProblemError(
                    status_code=429,
                    detail=f"Rate limit exceeded; retry in {decision.retry_after} seconds.",
                    slug="rate-limited",
                    headers={"Retry-After": str(decision.retry_after)},
                )
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        if request.query_params:
            method = (request.method or "").upper()
            allowed = documented_query_parameters(type(self), "GET" if method == "HEAD" else method)
            refuse_unknown_parameters(request.query_params, allowed)
            refuse_empty_values(request.query_params)
            self._refuse_repeated_parameters(request)

    def _refuse_repeated_parameters(self, request: Request) -> None:
        params = request.query_params
        repeated = [name for name in params if len(params.getlist(name)) > 1]
        if not repeated:
            return
        multi = self.multi_value_parameters | multi_value_filters(getattr(self, "filterset_class", None))
        for name in repeated:
            if name not in multi:
                raise DomainValidationError({name[:64]: "Give this parameter once: it takes a single value."})

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        decision: RateDecision | None = getattr(request, "rate_decision", None)
        if decision is not None:
            for name, value in decision.headers.items():
                response[name] = value
        return response


class PartnerAPIView(RateLimitedMixin, views.APIView):
    read_scope: str | None = None
    write_scope: str | None = None


class PartnerGenericAPIView(RateLimitedMixin, generics.GenericAPIView):  # type: ignore[type-arg]
    read_scope: str | None = None
    write_scope: str | None = None


# Sees nothing: what schema generation (drf-spectacular's fake views) gets instead of a real caller.
NO_ACCESS = Principal(
    partner_id=-1,
    partner_name="",
    key_prefix="",
    scopes=frozenset(),
    all_employers=False,
    employer_ids=frozenset(),
    rate_limits={},
)


def principal_of(request: Request) -> Principal:
    """The authenticated caller. Views run only after `HasScope` has required one, so anything else here is
    schema generation, which gets a principal that can see nothing."""
    principal = request.user
    return principal if isinstance(principal, Principal) else NO_ACCESS


def actor_from_request(request: Request) -> Actor:
    principal = principal_of(request)
    return Actor(
        kind="api_key",
        label=principal.key_prefix,
        partner_id=principal.partner_id,
        ip=request.META.get("REMOTE_ADDR"),
        request_id=current_correlation_id(),
    )
