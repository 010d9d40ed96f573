"""Configuring the sandbox insurer (management command, tests)."""

from __future__ import annotations

from django.db import transaction

from apps.insurers.sandbox.models import SandboxConfig, SandboxMode, default_rejection_rules


@transaction.atomic
def sandbox_configure(
    *,
    code: str,
    latency_ms: int | None = None,
    failure_rate: float | None = None,
    mode: str | None = None,
    callback_url: str | None = None,
    reset_rules: bool = False,
) -> SandboxConfig:
    """Change only the given settings of sandbox `code` (created with defaults if new)."""
    config, _ = SandboxConfig.objects.select_for_update().get_or_create(code=code)
    if latency_ms is not None:
        if latency_ms < 0:
            raise ValueError("latency must be >= 0 ms")
        config.latency_ms = latency_ms
    if failure_rate is not None:
        if not 0 <= failure_rate <= 1:
            raise ValueError("failure rate must be between 0 and 1")
        config.failure_rate = failure_rate
    if mode is not None:
        if mode not in SandboxMode.values:
            raise ValueError(f"mode must be one of {', '.join(SandboxMode.values)}")
        config.mode = mode
    if callback_url is not None:
        config.callback_url = callback_url
    if reset_rules:
        config.rejection_rules = default_rejection_rules()
    config.save()
    return config
