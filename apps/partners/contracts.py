"""What other apps may know about an authenticated partner request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated API caller (set as `request.user` by `ApiKeyAuthentication`)."""

    partner_id: int
    partner_name: str
    key_prefix: str
    scopes: frozenset[str]
    all_employers: bool
    # Employer ids a non-platform key may act for (empty for platform keys: they act for all of the
    # partner's employers).
    employer_ids: frozenset[int]
    # {"minute": n, "hour": n, "day": n} for this key's partner.
    rate_limits: dict[str, int]

    # DRF and Django treat `request.user` as a user object; these make a Principal behave like one.
    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_active = True

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def may_act_for(self, *, employer_id: int, employer_partner_id: int) -> bool:
        if employer_partner_id != self.partner_id:
            return False
        return self.all_employers or employer_id in self.employer_ids

    @property
    def pk(self) -> str:
        return self.key_prefix
