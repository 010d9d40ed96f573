"""Test helpers of the endorsement pipeline (imported by tests only, like `apps.outbox.testing`)."""

from __future__ import annotations

from apps.common.actors import Actor
from apps.outbox.testing import drain

PIPELINE_ACTOR = Actor.system("tests")


def run_pipeline(rounds: int = 6, *, actor: Actor = PIPELINE_ACTOR) -> None:
    """Outbox → process → scheduler (window forced) → dispatch to the insurer → results, until quiet or `rounds`
    scheduler ticks have passed (inline, no Celery hop)."""
    from apps.endorsements import services

    for _ in range(rounds):
        drain()
        if not services.scheduler_tick(actor=actor, force=True):
            drain()
            return
