"""Helpers for the webhook tests: a resolver stub, an endpoint with its secret, events of every type."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import transaction

from apps.common.actors import Actor
from apps.partners.contracts import Principal
from apps.partners.models import Scope
from apps.partners.webhooks import urlpolicy
from apps.partners.webhooks.contracts import EventDraft, EventType
from apps.partners.webhooks.events import events_sequence, partner_events_record
from apps.partners.webhooks.models import Event, WebhookEndpoint
from apps.partners.webhooks.services import webhook_endpoint_create

SYSTEM = Actor.system("tests")


def principal(partner_id: int, *, employer_ids: tuple[int, ...] = (), scopes: list[str] | None = None) -> Principal:
    return Principal(
        partner_id=partner_id,
        partner_name="p",
        key_prefix="testkey",
        scopes=frozenset(scopes if scopes is not None else Scope.values),
        all_employers=not employer_ids,
        employer_ids=frozenset(employer_ids),
        rate_limits={},
    )


@contextmanager
def resolver_stub(table: dict[str, list[str]]) -> Iterator[list[str]]:
    """Replace DNS: `table` maps host → addresses; yields the list of hosts looked up."""
    looked_up: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        looked_up.append(host)
        if host not in table:
            raise OSError("unknown host")
        return list(table[host])

    previous = urlpolicy.resolve
    urlpolicy.resolve = resolve
    try:
        yield looked_up
    finally:
        urlpolicy.resolve = previous


def endpoint_for(
    partner_id: int, url: str, *, types: list[str] | None = None, employer_ids: tuple[int, ...] = ()
) -> tuple[WebhookEndpoint, str]:
    return webhook_endpoint_create(
        principal=principal(partner_id, employer_ids=employer_ids),
        url=url,
        event_types=types or list(EventType.values),
        description="",
        actor=SYSTEM,
    )


def record(
    partner_id: int,
    *,
    type: str = EventType.LEDGER_TOPUP_POSTED,
    employer_id: int | None = None,
    object_id: str = "1",
    data: dict | None = None,
) -> Event:
    """Record one event in its own transaction and sequence it (the consumer's work), like a producer would."""
    with transaction.atomic():
        [event] = partner_events_record(
            [
                EventDraft(
                    type=type,
                    partner_id=partner_id,
                    employer_id=employer_id,
                    object_type=type.split(".")[0],
                    object_id=object_id,
                    data=data or {"n": object_id},
                )
            ]
        )
    events_sequence()
    event.refresh_from_db()
    return event
