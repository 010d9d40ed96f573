"""Beat entry points of the insurers app (thin: each calls a service)."""

from __future__ import annotations

from celery import shared_task

from apps.insurers.files.importer import result_files_import
from apps.insurers.sandbox.files import sandbox_files_process_all
from apps.insurers.sandbox.roster_files import sandbox_roster_requests_answer_all


@shared_task(name="insurers.import_result_files", ignore_result=True)
def import_result_files() -> dict[str, int]:
    """Every few seconds: import waiting result files of every active file insurer (SPEC §8)."""
    return dict(result_files_import())


@shared_task(name="insurers.sandbox_files", ignore_result=True)
def sandbox_files() -> int:
    """Every few seconds when the sandbox is enabled: the sandbox file insurer answers waiting batches and
    roster requests (reconciliation)."""
    return sandbox_files_process_all() + sandbox_roster_requests_answer_all()
