"""Reads of the insurer integration for operators (the /ops/ dashboard)."""

from __future__ import annotations

from apps.insurers.models import ConflictStatus, InsurerConflict


def insurer_conflicts_unresolved(*, limit: int = 10) -> tuple[int, list[InsurerConflict]]:
    """(how many insurer conflicts wait for an operator or for the insurer's reversal, the newest `limit` of
    them with their insurer). Served by the (status, detected_at) index."""
    unresolved = InsurerConflict.objects.filter(
        status__in=[ConflictStatus.OPEN, ConflictStatus.REVERSAL_REQUESTED]
    ).select_related("insurer")
    return unresolved.count(), list(unresolved.order_by("-detected_at", "-id")[:limit])
