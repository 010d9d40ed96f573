"""Reads of the insurer integration: the active insurers (policies, the insurers list, /ops/) and the conflicts
waiting for operators."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from apps.insurers.models import ConflictStatus, Insurer, InsurerConflict, ResultFile, ResultFileStatus


def insurers_active() -> QuerySet[Insurer]:
    """Active insurers, by code."""
    return Insurer.objects.filter(is_active=True).order_by("code")


def insurer_get(insurer_id: int) -> Insurer:
    """The insurer with this id, active or not; one query. Raises `Insurer.DoesNotExist` if there is none."""
    return Insurer.objects.get(pk=insurer_id)


def insurer_by_code(code: str) -> Insurer | None:
    """The insurer with this code, active or not, or None."""
    return Insurer.objects.filter(code=code).first()


def insurer_active_get(code: str) -> Insurer | None:
    """The active insurer with this code, or None."""
    return Insurer.objects.filter(code=code, is_active=True).first()


def insurer_conflicts_unresolved(*, limit: int = 10) -> tuple[int, list[InsurerConflict]]:
    """(how many insurer conflicts wait for an operator or for the insurer's reversal, the newest `limit` of
    them with their insurer). Served by the (status, detected_at) index."""
    unresolved = InsurerConflict.objects.filter(
        status__in=[ConflictStatus.OPEN, ConflictStatus.REVERSAL_REQUESTED]
    ).select_related("insurer")
    return unresolved.count(), list(unresolved.order_by("-detected_at", "-id")[:limit])


def result_files_quarantined_by_insurer() -> dict[str, int]:
    """{insurer code: how many of its result files were quarantined (all time)}, insurers with none left out;
    one grouped query (issue 11: the ops dashboard and `keel_insurer_result_files_quarantined`)."""
    rows = (
        ResultFile.objects.filter(status=ResultFileStatus.QUARANTINED)
        .values_list("insurer__code")
        .annotate(count=Count("id"))
        .order_by("insurer__code")
    )
    return dict(rows)
