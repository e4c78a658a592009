"""How soon a new task's first mail leaves an idle scheduler.

    python bench/first_mail.py [--tasks 50] [--min-gap-ms 50] [--max-gap-ms 300]

One real ``manage.py run_scheduler`` process, idle, with the default poll
(queue.no_work_sleep_seconds); an aiosmtpd sink in this process. K tasks of
one recipient are created one at a time (task_create, as the API does), at
random gaps; each is timed from task_create's return to the sink receiving
its mail. Prints p50/p99 next to a ceiling measured in the same run: a raw
smtplib send to the same sink on an open connection plus one SQL round trip.
Uses BENCH_DATABASE_URL (recreated).
"""

from __future__ import annotations

import argparse
import os
import random
import smtplib
import subprocess
import sys
import time

from harness import ROOT, percentile, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--min-gap-ms", type=float, default=50)
    parser.add_argument("--max-gap-ms", type=float, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    vendor = setup_django()
    from django.db import connection

    from accounts.models import User
    from config.services import get_config_by_category
    from queues.models import EmailService, SubTask
    from queues.services import task_create
    from queues.sink import SmtpSink

    sink = SmtpSink().start()
    EmailService.objects.create(
        name="bench",
        host="127.0.0.1",
        port=sink.port,
        security="none",
        from_email="bench@edm.example",
        sending_rate=0,
        daily_quota=10_000_000,
    )
    user = User.objects.create(username="first-mail")
    poll = get_config_by_category("queue")["no_work_sleep_seconds"]
    connection.close()
    scheduler = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "run_scheduler", "--maintenance", "off"],
        env=dict(os.environ, LOG_LEVEL="WARNING"),
    )
    try:
        time.sleep(3)  # started and idle
        rng = random.Random(args.seed)
        waits = []
        for i in range(args.tasks):
            time.sleep(rng.uniform(args.min_gap_ms, args.max_gap_ms) / 1000)
            task = task_create(
                owner=user, name=f"t{i}", subject="Hi", body_text="Hello.", recipients=[f"r{i}@first.example"]
            )
            created = time.time()
            message_id = SubTask.objects.filter(task=task).values_list("message_id", flat=True).get()
            deadline = time.monotonic() + 30
            arrived = None
            while arrived is None and time.monotonic() < deadline:
                arrived = next((r.received_at for r in sink.snapshot() if r.message_id == message_id), None)
                if arrived is None:
                    time.sleep(0.001)
            if arrived is None:
                print(f"task {i}: no mail within 30 s")
                continue
            waits.append((arrived - created) * 1000)
    finally:
        scheduler.terminate()
        scheduler.wait(60)

    ceiling = _ceiling(sink.port, connection)
    sink.shutdown()
    print(
        f"database {vendor}; {len(waits)} tasks of 1 recipient, gaps {args.min_gap_ms:g}-{args.max_gap_ms:g} ms; "
        f"1 idle scheduler (no_work_sleep_seconds {poll:g})"
    )
    print(
        f"task_create return -> mail at the sink: p50 {percentile(waits, 50):.1f} ms, "
        f"p99 {percentile(waits, 99):.1f} ms, max {max(waits):.1f} ms"
    )
    print(f"ceiling (raw smtplib send on an open connection + one SQL round trip): p50 {ceiling:.2f} ms")


def _ceiling(port: int, connection) -> float:
    samples = []
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for i in range(50):
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            smtp.sendmail("bench@edm.example", [f"c{i}@first.example"], b"Subject: Hi\r\n\r\nHello.\r\n")
            samples.append((time.perf_counter() - started) * 1000)
    return percentile(samples, 50)


if __name__ == "__main__":
    main()
