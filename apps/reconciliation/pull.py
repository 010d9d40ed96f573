"""Pulling an insurer's roster over REST, one page at a time (issue 12, ADR 0040).

I/O only, no database: the runner calls `rest_roster_pages` outside any transaction and records each page
before asking for the next, so memory holds one page, never the roster.

Protocol (the sandbox's, `GET {endpoint}/roster?policy_number=P&cursor=C&limit=N`): a JSON page
`{"members": [...], "page": n, "next_cursor": str | null}`. 429 and 5xx, timeouts and connection errors are
transient: the page is asked again after `Retry-After` (delta-seconds or an HTTP date, read by the REST
gateway's `parse_retry_after`) or, without it, after exponential backoff with full jitter; a page that still
fails after `max_attempts` tries, or asks to wait longer than `max_wait_seconds`, fails the pull.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import requests

from apps.insurers.gateways.rest import parse_retry_after

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class RosterPullError(Exception):
    """The insurer's roster could not be pulled (retry budget spent, a refusal, an unreadable page)."""


@dataclass(frozen=True)
class RosterPage:
    members: list[
        dict[str, Any]
    ]  # employee_code, first_name, last_name, date_of_birth/start_date (date), sum_insured (paise)
    next_cursor: str | None
    page: int
    # Members of the policy at the insurer, when the insurer says (REST/SOAP: on the first page; file: the
    # manifest's row count). Drives the run's `percent`.
    total: int | None = None


@dataclass(frozen=True)
class PullPolicy:
    max_attempts: int = 6
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    max_wait_seconds: float = 120.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0


def member_from_insurer(raw: dict[str, Any]) -> dict[str, Any]:
    """An insurer's member record (JSON shape: ISO dates, `sum_insured` in paise) → the roster's values.
    Raises `ValueError`, `KeyError` or `TypeError` for an unreadable one."""
    return {
        "employee_code": str(raw["employee_code"]),
        "first_name": str(raw.get("first_name") or ""),
        "last_name": str(raw.get("last_name") or ""),
        "date_of_birth": date.fromisoformat(raw["date_of_birth"]) if raw.get("date_of_birth") else None,
        "sum_insured": int(raw["sum_insured"]),
        "start_date": date.fromisoformat(raw["start_date"]) if raw.get("start_date") else None,
        "gender": str(raw.get("gender") or ""),
    }


class TransientPullError(Exception):
    """One attempt failed in a way worth retrying; `retry_after` is what the insurer asked for (seconds)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def with_retries(fetch: Callable[[], Any], *, policy: PullPolicy, sleep: Callable[[float], None]) -> Any:
    """`fetch()`'s answer, retried while it raises `TransientPullError`, at most `policy.max_attempts` times.

    Each wait is the insurer's `retry_after` (never less: a throttled client waits at least what was asked)
    or, without one, full-jitter exponential backoff; a wait over `policy.max_wait_seconds` fails at once.
    Every wait goes through `sleep` (the runner's refreshes the run's lock first; tests pass a fake clock).
    Raises `RosterPullError` when the budget is spent; `RosterPullError` from `fetch` passes through."""
    last_error = ""
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return fetch()
        except TransientPullError as exc:
            last_error, retry_after = str(exc), exc.retry_after
        if attempt == policy.max_attempts:
            break
        if retry_after is not None:
            if retry_after > policy.max_wait_seconds:
                raise RosterPullError(
                    f"insurer asked to wait {retry_after:.0f} s (over {policy.max_wait_seconds:.0f} s)"
                )
            wait = retry_after
        else:
            # Full jitter spreads the retries of many workers; not security.
            wait = random.uniform(0, min(policy.backoff_cap_seconds, policy.backoff_base_seconds * 2**attempt))  # noqa: S311
        sleep(wait)
    raise RosterPullError(f"page failed after {policy.max_attempts} attempts: {last_error}")


def _fetch_json(
    *, session: requests.Session, url: str, params: dict[str, Any], policy: PullPolicy, sleep: Callable[[float], None]
) -> dict[str, Any]:
    """One page's JSON body, with bounded retries (`with_retries`)."""

    def attempt() -> dict[str, Any]:
        try:
            response = session.get(url, params=params, timeout=(policy.connect_timeout, policy.read_timeout))
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise TransientPullError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError as exc:
                raise RosterPullError(f"unreadable page: {exc}") from exc
            if not isinstance(body, dict):
                raise RosterPullError("unreadable page: not a JSON object")
            return body
        if response.status_code not in TRANSIENT_STATUSES:
            raise RosterPullError(f"insurer refused: HTTP {response.status_code} {response.text[:300]}")
        raise TransientPullError(
            f"HTTP {response.status_code}", retry_after=parse_retry_after(response.headers.get("Retry-After"))
        )

    body: dict[str, Any] = with_retries(attempt, policy=policy, sleep=sleep)
    return body


def _pages(
    *,
    url: str,
    policy_number: str,
    cursor: str,
    page_size: int,
    session: requests.Session | None,
    sleep: Callable[[float], None],
    policy: PullPolicy | None,
) -> Iterator[dict[str, Any]]:
    session = session or requests.Session()
    policy = policy or PullPolicy()
    while True:
        params: dict[str, Any] = {"policy_number": policy_number, "limit": page_size}
        if cursor:
            params["cursor"] = cursor
        body = _fetch_json(session=session, url=url, params=params, policy=policy, sleep=sleep)
        yield body
        cursor = body.get("next_cursor") or ""
        if not cursor:
            return


def rest_roster_pages(
    *,
    endpoint: str,
    policy_number: str,
    cursor: str = "",
    page_size: int = 1000,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    policy: PullPolicy | None = None,
) -> Iterator[RosterPage]:
    """Yield the roster of `policy_number` page by page from `cursor` (empty: the first page). The caller
    records a page before pulling the next one, and keeps `page.next_cursor` to resume from. Raises
    `RosterPullError` when a page cannot be had."""
    url = endpoint.rstrip("/") + "/roster"
    for body in _pages(
        url=url,
        policy_number=policy_number,
        cursor=cursor,
        page_size=page_size,
        session=session,
        sleep=sleep,
        policy=policy,
    ):
        try:
            yield RosterPage(
                members=[member_from_insurer(m) for m in body["members"]],
                next_cursor=body.get("next_cursor") or None,
                page=int(body.get("page") or 0),
                total=int(body["total"]) if body.get("total") is not None else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RosterPullError(f"unreadable roster page: {exc}") from exc


def rest_statement_charges(
    *,
    endpoint: str,
    policy_number: str,
    page_size: int = 1000,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    policy: PullPolicy | None = None,
) -> Iterator[tuple[int, int]]:
    """Yield the insurer's statement of charges of `policy_number` as `(endorsement_id, amount)` (paise, debit
    > 0, credit < 0) in endorsement-id order, one page in memory at a time. Raises `RosterPullError`."""
    url = endpoint.rstrip("/") + "/statement"
    for body in _pages(
        url=url,
        policy_number=policy_number,
        cursor="",
        page_size=page_size,
        session=session,
        sleep=sleep,
        policy=policy,
    ):
        try:
            charges = [(int(c["endorsement_id"]), int(c["amount"])) for c in body["charges"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RosterPullError(f"unreadable statement page: {exc}") from exc
        yield from charges
