"""System health: one overall status and the checks it was derived from.

Overall status:

- ``unhealthy`` (HTTP 503) only when this instance cannot work at all: the
  database does not answer. Load balancers and the deploy script take a 503
  instance out of service, which helps with a dead database connection but
  would not help with a task waiting too long;
- ``degraded`` when the system works but something needs an operator: no
  live scheduler, a stalled scheduler (its recorder or claim loop stuck),
  no ready service while work is due, the cache or broker
  down, the oldest waiting task past alerts.critical_seconds, an emergency
  alert nobody has acknowledged yet (acknowledged ones are still counted);
- ``healthy`` otherwise.

Each check is ``{"status": "ok" | "degraded" | "unhealthy" | "skipped", ...figures}``.
Messages never include connection URLs (they may carry passwords).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, OperationalError, connection
from django.db.models import Count
from django.utils import timezone

from config.services import get_config_by_category
from monitoring.models import Alert
from monitoring.services.system import SystemMonitorService

logger = logging.getLogger(__name__)

OK, DEGRADED, UNHEALTHY, SKIPPED = "ok", "degraded", "unhealthy", "skipped"
HEALTHY = "healthy"
BROKER_TIMEOUT_SECONDS = 2.0
DATABASE_TIMEOUT_SECONDS = 3.0


def system_health(*, now: dt.datetime | None = None) -> dict[str, Any]:
    """{"status": healthy | degraded | unhealthy, "checks": {name: {...}}}."""
    now = now or timezone.now()
    checks: dict[str, dict[str, Any]] = {"database": check_database()}
    checks["cache"] = check_cache()
    checks["broker"] = check_broker()
    if checks["database"]["status"] == OK:
        try:
            checks |= _queue_checks(now)
        except DatabaseError as exc:
            # The database went away between the ping and these queries.
            logger.warning("health queries failed", extra={"error": str(exc).strip()})
            checks["database"] = {"status": UNHEALTHY, "message": "database queries failed"}
    else:
        for name in ("schedulers", "ready_services", "backlog", "oldest_waiting_task", "open_alerts"):
            checks[name] = {"status": SKIPPED, "message": "database unavailable"}
    statuses = {check["status"] for check in checks.values()}
    overall = UNHEALTHY if UNHEALTHY in statuses else DEGRADED if DEGRADED in statuses else HEALTHY
    return {"status": overall, "checks": checks}


def ping_database() -> None:
    """SELECT 1, giving up after DATABASE_TIMEOUT_SECONDS when a pool has no connection to give.

    A pooled connection is otherwise waited for up to DB_POOL_TIMEOUT (30 s):
    far too long for a load balancer's probe of a dead database.
    """
    pool = getattr(connection, "pool", None) if connection.vendor == "postgresql" else None
    if pool is not None and connection.connection is None:
        from psycopg_pool import PoolTimeout

        pool.open()  # as Django does on first use; a no-op once open
        try:
            with pool.connection(timeout=DATABASE_TIMEOUT_SECONDS) as conn:
                conn.execute("SELECT 1").fetchone()
        except PoolTimeout as exc:
            raise OperationalError(str(exc)) from exc
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_database() -> dict[str, Any]:
    try:
        ping_database()
    except DatabaseError as exc:
        logger.warning("health: database unavailable", extra={"error": str(exc).strip()})
        connection.close()
        return {"status": UNHEALTHY, "message": "database unavailable"}
    return {"status": OK, "vendor": connection.vendor}


def check_cache() -> dict[str, Any]:
    key, value = f"edm:health:{uuid.uuid4().hex}", "ok"
    try:
        cache.set(key, value, timeout=10)
        readable = cache.get(key) == value
        cache.delete(key)
    except Exception as exc:  # any backend's connection error: the check reports it, never raises
        logger.warning("health: cache unavailable", extra={"error": type(exc).__name__})
        return {"status": DEGRADED, "message": f"cache unavailable ({type(exc).__name__})"}
    if not readable:
        return {"status": DEGRADED, "message": "cache did not return the value just written"}
    return {"status": OK, "backend": settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]}


def check_broker() -> dict[str, Any]:
    url = getattr(settings, "CELERY_BROKER_URL", None)
    if not url:
        return {"status": SKIPPED, "message": "no Celery broker configured"}
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as exc:  # kombu and the transports raise many kinds: report, never raise
        logger.warning("health: broker unavailable", extra={"error": type(exc).__name__})
        return {"status": DEGRADED, "message": f"broker unavailable ({type(exc).__name__})"}
    return {"status": OK}


def _schedulers_check(live: list, stalled: list) -> dict[str, Any]:
    check: dict[str, Any] = {
        "status": OK if live and not stalled else DEGRADED,
        "live": len(live),
        "workers": [beat.worker_id for beat in live],
    }
    if stalled:  # (absent when none, as before stalls were reported)
        check["stalled"] = len(stalled)
        check["stalled_workers"] = [beat.worker_id for beat in stalled]
    messages = [] if live else ["no scheduler process is alive"]
    messages += [f"scheduler {beat.worker_id}: {beat.stalled_reason or 'a loop'} stuck" for beat in stalled]
    if messages:
        check["message"] = "; ".join(messages)
    return check


def _queue_checks(now: dt.datetime) -> dict[str, dict[str, Any]]:
    system = SystemMonitorService
    live = system.live_schedulers(now=now)
    stalled = system.stalled_schedulers(now=now)
    backlog = system.backlog(now=now)
    ready = system.ready_services(now=now)
    oldest = system.oldest_waiting_task(now=now)
    critical = get_config_by_category("alerts")["critical_seconds"]
    open_alerts = dict.fromkeys(Alert.Severity.values, 0)
    unacknowledged_emergencies = 0
    for severity, status, n in (
        Alert.objects.exclude(status=Alert.Status.RESOLVED)
        .values_list("severity", "status")
        .annotate(n=Count("id"))
        .order_by()
    ):
        open_alerts[severity] += n
        if severity == Alert.Severity.EMERGENCY and status == Alert.Status.OPEN:
            unacknowledged_emergencies += n
    return {
        "schedulers": _schedulers_check(live, stalled),
        "ready_services": {
            "status": DEGRADED if ready == 0 and backlog["due"] else OK,
            "ready": ready,
            **({"message": "work is due but no service is ready"} if ready == 0 and backlog["due"] else {}),
        },
        "backlog": {"status": OK, **backlog},
        "oldest_waiting_task": {
            "status": DEGRADED if oldest and oldest["wait_seconds"] >= critical else OK,
            "task_id": oldest["task_id"] if oldest else None,
            "wait_seconds": oldest["wait_seconds"] if oldest else 0,
            "critical_seconds": critical,
        },
        "open_alerts": {
            "status": DEGRADED if unacknowledged_emergencies else OK,
            **open_alerts,
            "unacknowledged_emergency": unacknowledged_emergencies,
        },
    }
