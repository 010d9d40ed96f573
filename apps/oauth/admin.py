"""OAuth clients in the admin: created through `oauth_client_create` (secret shown once), revoked by an action
that calls `oauth_client_revoke`; last use and revocation are shown. Signing keys are read-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.common.actors import Actor
from apps.oauth.models import OAuthClient, SigningKey
from apps.oauth.services import oauth_client_create, oauth_client_revoke
from apps.partners.contracts import Scope


def _operator(request: HttpRequest) -> Actor:
    return Actor.operator(
        user_id=request.user.pk, username=request.user.get_username(), ip=request.META.get("REMOTE_ADDR")
    )


class OAuthClientForm(forms.ModelForm):
    """Checks a new client the way `oauth_client_create` will, so a mistake is a form error, not a 500."""

    class Meta:
        model = OAuthClient
        fields = ("partner", "name", "scopes", "all_employers", "employers")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.instance.pk is not None:
            return cleaned
        scopes = cleaned.get("scopes")
        if not isinstance(scopes, list) or not scopes or any(s not in Scope.values for s in scopes):
            self.add_error("scopes", f"a JSON list of one or more of: {', '.join(Scope.values)}")
        partner, employers = cleaned.get("partner"), list(cleaned.get("employers") or [])
        if bool(cleaned.get("all_employers")) == bool(employers):
            self.add_error("employers", "choose employers or tick all employers, not both and not neither")
        elif partner is not None and any(getattr(e, "partner_id", None) != partner.pk for e in employers):
            self.add_error("employers", "every employer must belong to the partner")
        return cleaned


@admin.register(OAuthClient)
class OAuthClientAdmin(admin.ModelAdmin):
    form = OAuthClientForm
    list_display = ("client_id", "name", "partner", "scopes", "all_employers", "last_used_at", "revoked_at")
    list_filter = ("partner", "all_employers", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("client_id", "name", "partner__name")
    filter_horizontal = ("employers",)
    readonly_fields = ("client_id", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke_clients",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None:  # scopes and employers of an existing client change only by a new client
            return (*self.readonly_fields, "partner", "scopes", "all_employers", "employers")
        return self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Any, form: Any = None, change: bool = False) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        client, secret = oauth_client_create(
            partner_id=obj.partner_id,
            partner_name=obj.partner.name,
            name=obj.name,
            scopes=obj.scopes,
            employer_ids=[e.pk for e in form.cleaned_data.get("employers", [])],
            all_employers=obj.all_employers,
            actor=_operator(request),
        )
        obj.pk, obj.client_id = client.pk, client.client_id
        obj._state.adding = False
        messages.warning(
            request, f"Client id {client.client_id}, secret: {secret} — store it now; it is not shown again."
        )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if change:
            super().save_related(request, form, formsets, change)

    @admin.action(description="Revoke selected clients (their tokens stop working at once)")
    def revoke_clients(self, request: HttpRequest, queryset: QuerySet[OAuthClient]) -> None:
        for client in queryset:
            oauth_client_revoke(client_id=client.client_id, actor=_operator(request))
        self.message_user(request, f"Revoked {queryset.count()} client(s).")


@admin.register(SigningKey)
class SigningKeyAdmin(admin.ModelAdmin):
    list_display = ("kid", "created_at", "retired_at")
    readonly_fields = ("kid", "public_jwk", "created_at", "retired_at")
    exclude = ("private_key",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # `manage.py oauth_key_rotate`

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
