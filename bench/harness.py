"""Shared set-up for the benchmarks: a dedicated, migrated database and timing helpers.

Benchmarks print figures; they assert nothing. They use BENCH_DATABASE_URL
(default: a fresh SQLite file under var/) and never the application's own
database: a PostgreSQL benchmark database is dropped and re-created.
"""

from __future__ import annotations

import base64
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django(*, fresh: bool = True) -> str:
    """Point Django at the benchmark database, (re)create and migrate it; returns the vendor."""
    sys.path.insert(0, str(ROOT))
    url = os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'bench.sqlite3'}")
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "bench-only-not-a-secret")
    os.environ.setdefault("EDM_FIELD_KEYS", base64.urlsafe_b64encode(b"bench-only-field-key-not-secret!").decode())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "edm.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    if fresh:
        recreate_database(url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.db import connection

    return connection.vendor


def recreate_database(url: str) -> None:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    import dj_database_url
    import psycopg

    cfg = dj_database_url.parse(url)
    with psycopg.connect(
        host=cfg["HOST"] or "127.0.0.1",
        port=cfg["PORT"] or 5432,
        user=cfg["USER"] or "postgres",
        password=cfg["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{cfg["NAME"]}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{cfg["NAME"]}"')


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def time_calls(func: Callable[[], object], repeat: int) -> list[float]:
    """Wall time of each call in milliseconds."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def summary(samples: list[float]) -> str:
    return (
        f"p50 {percentile(samples, 50):.3f} ms  p99 {percentile(samples, 99):.3f} ms  "
        f"mean {statistics.fmean(samples):.3f} ms  (n={len(samples)})"
    )


def proc_status_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of a running process from /proc (VmRSS now, VmHWM its peak), in MB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return 0.0


# The benchmark campaign: personalised subject, text and HTML parts of about 1 kB.
SUBJECT = "Hello {{ contact.first_name }}"
BODY_TEXT = "Hi {{ contact.first_name }}, this is a benchmark mail.\n" * 5
BODY_HTML = "<p>Hi <b>{{ contact.first_name }}</b>, this is a benchmark mail.</p>" * 5


def bench_services_create(*, port: int, count: int, sending_rate: float = 0.0) -> list:
    """``count`` services ``bench-<i>`` sending through 127.0.0.1:``port`` with no quota to speak of."""
    from queues.models import EmailService

    return EmailService.objects.bulk_create(
        EmailService(
            name=f"bench-{i}",
            host="127.0.0.1",
            port=port,
            security="none",
            from_email=f"bench-{i}@edm.example",
            sending_rate=sending_rate,
            daily_quota=10_000_000,
        )
        for i in range(count)
    )


def bench_task_create(*, owner, name: str, recipients: int, domain: str, prefix: str = "r"):
    """One campaign of ``recipients`` addresses ``<prefix><j>@<domain>``, through task_create as the API does."""
    from queues.services import task_create

    return task_create(
        owner=owner,
        name=name,
        subject=SUBJECT,
        body_text=BODY_TEXT,
        body_html=BODY_HTML,
        recipients=[{"email": f"{prefix}{j}@{domain}", "first_name": f"R{j}"} for j in range(recipients)],
    )
