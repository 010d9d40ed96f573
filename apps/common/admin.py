"""Admin building blocks shared by the apps."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Browse and filter only: rows here change through services (endorsements, the ledger, the outbox) or are
    append-only records, never through an admin form."""

    show_full_result_count = False
    list_per_page = 50

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        declared = list(self.readonly_fields)  # e.g. computed displays of a subclass
        return declared + [f.name for f in self.model._meta.fields if f.name not in declared]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class _ReadOnlyInline:
    """An inline that shows a row's history or children and never edits them."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyTabularInline(_ReadOnlyInline, admin.TabularInline):  # type: ignore[type-arg]
    pass


class ReadOnlyStackedInline(_ReadOnlyInline, admin.StackedInline):  # type: ignore[type-arg]
    pass
