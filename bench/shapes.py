"""The same number of mails in different shapes: does a mail cost the same whatever task or user it belongs to?

    python bench/shapes.py [--mails 10000] [--users 2500] [--concurrency 128] [--batch 50] [--sink fast]
                           [--shapes one-task,tasks,users]

Shapes, each drained by one ``run_scheduler --until-empty`` process:

- one-task: 1 user, 1 task of N recipients;
- tasks:    1 user, N tasks of 1 recipient;
- users:    U users, each 1 task of N/U recipients.

Prints mails/s of each (first to last send), the ratios tasks/one-task and
users/one-task, and the ceiling: the same number of mails sent by raw smtplib
over the same number of connections to the same sink, in the same run.
Uses BENCH_DATABASE_URL (recreated).
"""

from __future__ import annotations

import argparse
import os
import smtplib
import subprocess
import sys
import threading
import time
from email.message import EmailMessage

from harness import BODY_HTML, BODY_TEXT, ROOT, bench_services_create, bench_task_create, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=10000)
    parser.add_argument("--users", type=int, default=2500, help="users of the 'users' shape")
    parser.add_argument("--concurrency", type=int, default=128, help="run_scheduler --concurrency (its default: 128)")
    parser.add_argument("--batch", type=int, default=50, help="queue.claim_batch_size (its default: 50)")
    parser.add_argument("--services", type=int, default=1)
    parser.add_argument("--sink", choices=["aiosmtpd", "fast"], default="fast")
    parser.add_argument("--shapes", default="one-task,tasks,users")
    args = parser.parse_args()

    vendor = setup_django()
    sink_script = "sink_server.py" if args.sink == "aiosmtpd" else "fast_sink.py"
    sink = subprocess.Popen([sys.executable, str(ROOT / "bench" / sink_script)], stdout=subprocess.PIPE, text=True)
    port = int(sink.stdout.readline())
    n = args.mails
    shapes = {
        "one-task": (1, 1, n),
        "tasks": (1, n, 1),
        "users": (args.users, 1, n // args.users),
    }
    print(
        f"database {vendor}; {n} mails per shape; {args.sink} sink; 1 scheduler process x concurrency "
        f"{args.concurrency}, claim batch {args.batch}, {args.services} service(s) (rate 0)"
    )
    rates: dict[str, float] = {}
    for name in args.shapes.split(","):
        users, tasks, recipients = shapes[name]
        rate, setup = _run_shape(port, args, users, tasks, recipients)
        rates[name] = rate
        print(
            f"  {name:9s} {users} user(s) x {tasks} task(s) x {recipients} recipient(s): {rate:7.0f} mails/s "
            f"(set-up {setup:.0f} s)",
            flush=True,
        )
    ceiling = _raw_smtp_rate(port, n, args.concurrency)
    print(f"  ceiling   raw smtplib, {args.concurrency} connections:            {ceiling:7.0f} mails/s")
    if "tasks" in rates and "one-task" in rates:
        print(f"ratio tasks/one-task: {rates['tasks'] / rates['one-task']:.2f} (target >= 0.70)")
    if "users" in rates and "one-task" in rates:
        print(f"ratio users/one-task: {rates['users'] / rates['one-task']:.2f} (target >= 0.80)")
    sink.terminate()
    print(f"sink {sink.stdout.read().strip()}")


def _reset() -> None:
    from django.db import connection

    from accounts.models import User
    from queues.models import EmailService, SendAttempt, SubTask, Task, TaskWaitMetric, UserQueue

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE send_attempts, subtasks, tasks, user_queues, task_wait_metrics, contacts, "
                "email_services, worker_heartbeats, users CASCADE"
            )
        return
    for model in (SendAttempt, SubTask, Task, UserQueue, TaskWaitMetric, EmailService, User):
        model.objects.all().delete()


def _run_shape(port: int, args: argparse.Namespace, users: int, tasks: int, recipients: int) -> tuple[float, float]:
    setup = prepare(port, args, users, tasks, recipients)
    return _drain(args), setup


def prepare(port: int, args: argparse.Namespace, users: int, tasks: int, recipients: int) -> float:
    """Empty the queue, then queue the shape's tasks through task_create; returns the seconds it took."""
    from django.db import connection

    from accounts.models import User
    from config.services import ConfigManagerService
    from queues.expansion import tasks_prepare

    _reset()
    ConfigManagerService.set_config("queue", "claim_batch_size", args.batch)
    bench_services_create(port=port, count=args.services)
    setup_start = time.perf_counter()
    owners = User.objects.bulk_create(User(username=f"u{i}") for i in range(users))
    for u, owner in enumerate(owners):
        for t in range(tasks):
            bench_task_create(
                owner=owner, name=f"bench {u}-{t}", recipients=recipients, domain=f"u{u}.example", prefix=f"r{t}-"
            )
    tasks_prepare()  # a task of over 1,000 recipients is prepared in the background otherwise
    setup = time.perf_counter() - setup_start
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    connection.close()
    return setup


def _drain(args: argparse.Namespace) -> float:
    """Mails/s of one scheduler process draining the queue (first to last send)."""
    from queues.models import SendAttempt, SubTask

    total = SubTask.objects.count()
    env = dict(os.environ, LOG_LEVEL="WARNING")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "run_scheduler",
            "--until-empty",
            "--maintenance",
            "off",
            "--concurrency",
            str(args.concurrency),
        ],
        env=env,
        check=True,
    )
    span = SendAttempt.objects.filter(outcome="sent")
    first = span.order_by("started_at").values_list("started_at", flat=True).first()
    last = span.order_by("-finished_at").values_list("finished_at", flat=True).first()
    sent = SubTask.objects.filter(status="sent").count()
    if sent != total:
        print(f"    (sent {sent} of {total})")
    return sent / (last - first).total_seconds()


def _raw_smtp_rate(port: int, n: int, connections: int) -> float:
    """Mails/s of plain smtplib sends of a similar message over ``connections`` open connections."""
    message = EmailMessage()
    message["From"] = "bench@edm.example"
    message["To"] = "r@edm.example"
    message["Subject"] = "Hello R"
    message.set_content(BODY_TEXT.replace("{{ contact.first_name }}", "R"))
    message.add_alternative(BODY_HTML.replace("{{ contact.first_name }}", "R"), subtype="html")
    data = message.as_bytes()
    per = [n // connections + (1 if i < n % connections else 0) for i in range(connections)]

    def send(count: int) -> None:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            for _ in range(count):
                smtp.sendmail("bench@edm.example", ["r@edm.example"], data)

    threads = [threading.Thread(target=send, args=(c,)) for c in per]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return n / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
