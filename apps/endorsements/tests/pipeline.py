"""Drive the endorsement pipeline in a test without Celery: shared by every test that needs endorsements to reach
their insurer's answer (endorsements, reconciliation, the SOAP sandbox roster)."""

from __future__ import annotations

from apps.common.actors import Actor


def run_pipeline(rounds: int = 6) -> None:
    """Outbox → process → scheduler (window forced) → dispatch → results, until a scheduler tick finds nothing
    to send or `rounds` ticks have run. Insurers answering synchronously (REST, SOAP) are done then; a file
    insurer also needs its files processed and imported between rounds."""
    from apps.endorsements import services
    from apps.outbox.testing import drain

    for _ in range(rounds):
        drain()
        if not services.scheduler_tick(actor=Actor.system("tests"), force=True):
            drain()
            return
