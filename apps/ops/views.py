"""The /ops/ dashboard (SPEC §11, issue 14): staff only, server-rendered, every asset served by Keel.

`/ops/` renders the whole page; `/ops/panels` renders only the panels, which the page's own script
(`static/ops/ops.js`, no library) fetches every `OPS_REFRESH_SECONDS` and swaps in without a reload, and also
within a second of an event on the operators' live feed (`/ops/events/stream`, `apps/ops/live.py`, ADR 0055),
whose latest events it lists. A
strict Content-Security-Policy (`'self'` only) makes any off-machine request impossible, not just absent.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.ops.selectors import dashboard
from apps.partners.webhooks.contracts import EventType

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _render(request: HttpRequest, template: str) -> HttpResponse:
    started = time.perf_counter()
    now = timezone.now()
    context = {
        "panels": dashboard(now),
        "now": now,
        "refresh_ms": int(getattr(settings, "OPS_REFRESH_SECONDS", 5) * 1000),
        "live_types": EventType.values,  # the feed's `event:` names, one listener each (ops.js)
        # The feed streams only under the ASGI server (ADR 0050); elsewhere the page polls and opens nothing.
        "live_feed": isinstance(request, ASGIRequest),
    }
    response = render(request, template, context)
    response["Content-Security-Policy"] = CSP
    response["Server-Timing"] = f"total;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


@never_cache
@require_GET
@staff_member_required
def ops_dashboard(request: HttpRequest) -> HttpResponse:
    return _render(request, "ops/dashboard.html")


@never_cache
@require_GET
@staff_member_required
def ops_panels(request: HttpRequest) -> HttpResponse:
    return _render(request, "ops/_panels.html")
