"""The ready-service query at 100, 1,000 and 10,000 services.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/edm_bench python bench/ready_services.py

Runs the claim's query (the plan's conditions and order, LIMIT 16, FOR UPDATE
SKIP LOCKED) in a transaction that is rolled back, so nothing changes between
runs. Two mixes: 1 % of the services ready (rate-limited services, most of
them waiting out their sending_rate) and all of them ready.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random

from harness import setup_django, summary, time_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()

    vendor = setup_django()
    from django.db import connection, transaction
    from django.utils import timezone

    from config.services import get_config_by_category
    from queues.models import EmailService
    from queues.scheduler.claim import _lock_ready_services, quota_day

    today = quota_day(timezone.now(), get_config_by_category("queue")["quota_timezone"])
    rng = random.Random(3)
    print(f"database: {vendor}")
    for size in (int(s) for s in args.sizes.split(",")):
        for ready_share in (0.01, 1.0):
            EmailService.objects.all().delete()
            now = timezone.now()
            EmailService.objects.bulk_create(
                EmailService(
                    name=f"s{i}",
                    host="h",
                    from_email=f"s{i}@x.example",
                    sending_rate=1,
                    daily_quota=10_000,
                    used_quota=rng.randrange(5000),
                    quota_date=today,
                    next_available_at=(now - dt.timedelta(seconds=1))
                    if rng.random() < ready_share
                    else now + dt.timedelta(hours=1),
                )
                for i in range(size)
            )
            if vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("VACUUM ANALYZE email_services")

            with transaction.atomic():
                # One open transaction: the query as the claim runs it (round
                # trip, 16 rows made into EmailService objects), without a
                # commit per call; rolled back at the end.
                def query() -> None:
                    _lock_ready_services(today, 16, timezone.now())

                time_calls(query, 50)  # warm up
                label = f"{size:>6} services, {ready_share:>4.0%} ready"
                client = summary(time_calls(query, args.repeat))
                server = _server_times(connection, today, 200) if vendor == "postgresql" else None
                transaction.set_rollback(True)
            print(
                f"{label}: {client}"
                + (f"; server execution p50 {server[0]:.3f} ms p99 {server[1]:.3f} ms" if server else "")
            )


def _server_times(connection, today, repeat: int) -> tuple[float, float]:
    from django.utils import timezone
    from harness import percentile

    from queues.scheduler.pgsql import READY_SERVICES_SQL

    times = []
    with connection.cursor() as cursor:
        for _ in range(repeat):
            cursor.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + READY_SERVICES_SQL,
                {"today": today, "limit": 16, "now": timezone.now()},
            )
            plan = cursor.fetchone()[0]
            plan = plan[0] if isinstance(plan, list) else __import__("json").loads(plan)[0]
            times.append(plan["Execution Time"])
    return percentile(times, 50), percentile(times, 99)


if __name__ == "__main__":
    main()
