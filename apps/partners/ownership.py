"""Which partner owns an employer — asked by partners, answered by the employers app (a higher layer).

Partners sits below employers (import-linter "layers"), yet two of its steps need the owner of an employer id:
`api_key_create` (a key may only name its own partner's employers) and the partner events (each event goes to
the partner that owns the event's employer). Partners must not import employers (nor reach its model through
`apps.get_model`), so the dependency points the other way: employers registers a resolver here in its
`AppConfig.ready` (`apps.employers.selectors.employer_partners`), and partners calls it through
`employer_partners`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

EmployerPartners = Callable[[Iterable[int]], dict[int, int]]

_resolver: EmployerPartners | None = None


def employer_partners_register(resolver: EmployerPartners) -> None:
    """Install the resolver (employers does, once, at start-up); a second call replaces the first."""
    global _resolver
    _resolver = resolver


def employer_partners(employer_ids: Iterable[int]) -> dict[int, int]:
    """`{employer_id: partner_id}` for the ids that exist (unknown ids are absent). One query.

    Raises `RuntimeError` if no resolver is registered (the employers app is not installed).
    """
    if _resolver is None:
        raise RuntimeError("no employer-ownership resolver registered: is apps.employers in INSTALLED_APPS?")
    return _resolver(employer_ids)
