"""Queue samples: the queue's shape once a minute, so that it can be charted over time."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from monitoring.models import QueueSample
from monitoring.services.system import SystemMonitorService

# Long enough for "what happened over the weekend", short enough to stay a
# small table (one row a minute: about 10,000 rows).
SAMPLE_RETENTION = dt.timedelta(days=7)


def queue_sample_take(*, now: dt.datetime | None = None) -> QueueSample:
    """Record the queue depth, ready services, live schedulers and sent/failed totals now."""
    now = now or timezone.now()
    depth = SystemMonitorService.queue_depth()
    totals = SystemMonitorService.totals()
    return QueueSample.objects.create(
        taken_at=now,
        pending=depth["pending"],
        in_flight=depth["allocated"] + depth["processing"],
        ready_services=SystemMonitorService.ready_services(now=now),
        live_schedulers=len(SystemMonitorService.live_schedulers(now=now)),
        sent_total=totals["sent"],
        failed_total=totals["failed"],
    )


def queue_samples_prune(*, now: dt.datetime | None = None) -> int:
    """Delete the samples older than SAMPLE_RETENTION; returns how many."""
    now = now or timezone.now()
    deleted, _ = QueueSample.objects.filter(taken_at__lt=now - SAMPLE_RETENTION).delete()
    return deleted
