"""Insurer gateway: one interface (`InsurerGateway`), one adapter per protocol."""

from apps.insurers.gateways.base import InsurerGateway, gateway_for

__all__ = ["InsurerGateway", "gateway_for"]
