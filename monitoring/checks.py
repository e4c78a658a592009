"""Deployment checks (``manage.py check --deploy``) for the monitoring endpoints."""

from __future__ import annotations

from django.core.checks import Tags, Warning, register

from common.metrics_auth import MetricsCredentials


@register(Tags.security, deploy=True)
def metrics_credentials_check(app_configs, **kwargs) -> list[Warning]:
    """Without credentials /metrics and the schedulers' metrics ports refuse every scrape outside DEBUG."""
    if MetricsCredentials.from_settings().configured:
        return []
    return [
        Warning(
            "No metrics credentials are configured: /metrics and run_scheduler --metrics-port refuse every scrape",
            hint="Set EDM_METRICS_TOKEN (or EDM_METRICS_USER and EDM_METRICS_PASSWORD) here and in Prometheus.",
            id="monitoring.W001",
        )
    ]
