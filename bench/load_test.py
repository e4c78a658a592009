"""A production-shaped load test: everything a deployment runs, on this machine.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/edm_load \\
        python bench/load_test.py [--subtasks 100000] [--users 1000] [--services 100] [--processes 3]

Starts gunicorn, N ``run_scheduler`` processes, a Celery worker and Celery beat
(Redis broker, the periodic sweeps), and an SMTP server (aiosmtpd, in this
process, recording every message). Creates the services (staff) and one task
per user through the REST API over HTTP while the schedulers run, waits until
every subtask is terminal, then prints: mails/s, first-send wait p50/p99
across users, rate and quota violations seen at the SMTP server, lost and
duplicated mails, and the peak RSS of every process.

The benchmark database is dropped and re-created; Redis database
BENCH_REDIS_DB (default 5) is flushed. Asserts nothing; prints figures.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import ROOT, percentile, proc_status_mb, setup_django

# A tenth of the services get a small daily quota, so that the quota limit is
# really reached during the run (and must hold).
SMALL_QUOTA_EVERY = 10
SMALL_QUOTA = 300
LARGE_QUOTA = 1_500


def main() -> None:
    args = _arguments()
    redis_url = f"{os.environ.get('BENCH_REDIS_URL', 'redis://127.0.0.1:6379')}/{args.redis_db}"
    os.environ["REDIS_URL"] = redis_url
    os.environ["DEBUG"] = "0"
    os.environ["ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    vendor = setup_django()
    if vendor != "postgresql":
        sys.exit("the load test needs PostgreSQL: set BENCH_DATABASE_URL=postgres://...")

    import redis
    from django.core.management import call_command
    from django.db import connection

    from queues.sink import SmtpSink

    redis.Redis.from_url(redis_url).flushdb()
    call_command("setup_periodic_tasks", stdout=open(os.devnull, "w"))  # noqa: SIM115
    sink = SmtpSink(latency=args.latency_ms / 1000).start()
    staff_token, user_tokens = _accounts(args.users)
    connection.close()

    procs = Processes()
    try:
        web = procs.start_web(args.web_workers)
        procs.start(
            "celery-worker",
            [sys.executable, "-m", "celery", "-A", "edm", "worker", "--concurrency", "1", "--loglevel", "WARNING"],
        )
        procs.start(
            "celery-beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "edm",
                "beat",
                "--loglevel",
                "WARNING",
                "--scheduler",
                "django_celery_beat.schedulers:DatabaseScheduler",
                "--schedule",
                "/dev/null",
            ],
        )
        services = _create_services(web, staff_token, sink.port, args)
        for i in range(args.processes):
            procs.start(
                f"scheduler-{i}",
                [sys.executable, "manage.py", "run_scheduler", "--concurrency", str(args.concurrency)],
            )
        created, creation_seconds = _create_tasks(web, user_tokens, args)
        done_at = _wait_until_terminal(created, args.timeout, procs)
        peaks = procs.peak_rss()
    finally:
        procs.stop()
    records = sink.snapshot()
    sink.shutdown()
    _report(args, services, records, created, creation_seconds, done_at, peaks)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--processes", type=int, default=3, help="run_scheduler processes")
    parser.add_argument("--concurrency", type=int, default=8, help="sends in flight per scheduler")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the SMTP server's delay before each reply")
    parser.add_argument("--sending-rate", type=float, default=0.05, help="seconds between sends of one service")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--api-clients", type=int, default=4, help="concurrent API clients creating tasks")
    parser.add_argument("--redis-db", type=int, default=int(os.environ.get("BENCH_REDIS_DB", "5")))
    parser.add_argument("--timeout", type=float, default=1800)
    return parser.parse_args()


def _accounts(users: int) -> tuple[str, list[str]]:
    from rest_framework.authtoken.models import Token

    from accounts.models import User

    staff = User.objects.create_user("load-staff", is_staff=True)
    owners = User.objects.bulk_create(User(username=f"load-user-{i}") for i in range(users))
    tokens = Token.objects.bulk_create(Token(user=u, key=Token.generate_key()) for u in owners)
    return Token.objects.create(user=staff).key, [t.key for t in tokens]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """The deployment's processes, their peak memory, and a clean stop."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, LOG_LEVEL="WARNING")

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(ROOT / "var" / f"load-{name}.log", "w")  # noqa: SIM115 - the process writes it until stop()
        proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start_web(self, workers: int) -> str:
        port = _free_port()
        self.start(
            "gunicorn",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "edm.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--timeout",
                "120",
            ],
        )
        base = f"http://127.0.0.1:{port}"
        import requests

        for _ in range(100):
            try:
                requests.get(f"{base}/api/monitoring/system-health", timeout=2)
                return base
            except requests.ConnectionError:
                time.sleep(0.2)
        raise SystemExit("gunicorn did not come up; see var/load-gunicorn.log")

    def peak_rss(self) -> dict[str, float]:
        """VmHWM (peak resident set) of each process and its children, in MB."""
        peaks = {}
        for name, proc in self.procs.items():
            pids = [proc.pid, *_children(proc.pid)]
            peaks[name] = max((proc_status_mb(pid, "VmHWM") for pid in pids), default=0.0)
        return peaks

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _create_services(web: str, staff_token: str, port: int, args) -> list[dict]:
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Token {staff_token}"
    services = []
    for i in range(args.services):
        body = {
            "name": f"load-{i}",
            "transport": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from_email": f"load-{i}@edm.example",
            "sending_rate": args.sending_rate,
            "daily_quota": SMALL_QUOTA if i % SMALL_QUOTA_EVERY == 0 else LARGE_QUOTA,
        }
        response = session.post(f"{web}/api/services/", json=body, timeout=30)
        if response.status_code != 201:
            raise SystemExit(f"creating service {i}: HTTP {response.status_code} {response.text[:300]}")
        services.append(response.json())
    return services


def _create_tasks(web: str, tokens: list[str], args) -> tuple[dict[str, float], float]:
    """One task per user through POST /api/tasks/; returns {task id: created (epoch)} and the seconds taken."""
    import requests

    per_user = args.subtasks // len(tokens)

    def create(index: int) -> tuple[str, float]:
        body = {
            "name": f"load {index}",
            "subject": "Hello {{ contact.first_name }}",
            "body_text": "Hi {{ contact.first_name }}, this is a load-test mail.\n" * 5,
            "body_html": "<p>Hi <b>{{ contact.first_name }}</b>, this is a load-test mail.</p>" * 5,
            "recipients": [{"email": f"r{j}@u{index}.example", "first_name": f"R{j}"} for j in range(per_user)],
        }
        response = requests.post(
            f"{web}/api/tasks/", json=body, headers={"Authorization": f"Token {tokens[index]}"}, timeout=120
        )
        if response.status_code != 201:
            raise RuntimeError(f"task {index}: HTTP {response.status_code} {response.text[:300]}")
        return response.json()["id"], time.time()

    started = time.perf_counter()
    with ThreadPoolExecutor(args.api_clients) as pool:
        created = dict(pool.map(create, range(len(tokens))))
    return created, time.perf_counter() - started


def _wait_until_terminal(created: dict[str, float], timeout: float, procs: Processes) -> float:
    from queues.models import SubTask

    deadline = time.monotonic() + timeout
    open_statuses = ["pending", "allocated", "processing"]
    while time.monotonic() < deadline:
        if not SubTask.objects.filter(status__in=open_statuses).exists():
            return time.time()
        dead = [name for name, p in procs.procs.items() if p.poll() is not None]
        if dead:
            raise SystemExit(f"processes exited early: {dead}; see var/load-*.log")
        time.sleep(1)
    raise SystemExit(f"not done after {timeout} s")


def _report(args, services, records, created, creation_seconds, done_at, peaks) -> None:
    from queues.models import SendAttempt, SubTask, TaskWaitMetric

    statuses = Counter(SubTask.objects.values_list("status", flat=True))
    total = sum(statuses.values())
    expected_ids = set(SubTask.objects.filter(status="sent").values_list("message_id", flat=True))
    seen = Counter(r.message_id for r in records)
    lost = len(expected_ids - set(seen)) + sum(n for s, n in statuses.items() if s not in ("sent", "failed"))
    duplicates = sum(n - 1 for n in seen.values() if n > 1)

    rate_violations, quota_violations, quota_full = _invariants(services, records)
    sent_attempts = SendAttempt.objects.filter(outcome="sent")
    first = sent_attempts.order_by("started_at").values_list("started_at", flat=True).first()
    last = sent_attempts.order_by("-finished_at").values_list("finished_at", flat=True).first()
    drain = (last - first).total_seconds()
    waits = [  # wait_duration_seconds is whole seconds (the plan's column): use the times
        (m.first_send_time - m.queue_entry_time).total_seconds()
        for m in TaskWaitMetric.objects.filter(task_id__in=list(created)).exclude(first_send_time=None)
    ]
    print(
        f"{total} subtasks from {args.users} users (one task each, created through the REST API) through "
        f"{args.services} services (sending_rate {args.sending_rate:g} s; daily quota {LARGE_QUOTA}, "
        f"every {SMALL_QUOTA_EVERY}th {SMALL_QUOTA}); {args.processes} scheduler process(es) x concurrency "
        f"{args.concurrency}; gunicorn {args.web_workers} workers; Celery worker + beat; aiosmtpd server, "
        f"reply latency {args.latency_ms:g} ms"
    )
    print(
        f"task creation over HTTP: {len(created)} tasks in {creation_seconds:.1f} s "
        f"({total / creation_seconds:.0f} subtasks/s)"
    )
    print(f"statuses: {dict(statuses)}")
    print(
        f"mails/s: {len(records) / drain:.0f} ({len(records)} received by the server, first to last send {drain:.1f} s)"
    )
    print(
        f"first-send wait across {len(waits)} users' tasks: p50 {percentile(waits, 50):.1f} s, "
        f"p99 {percentile(waits, 99):.1f} s, max {max(waits):.1f} s"
    )
    print(
        f"rate violations: {rate_violations}; quota violations: {quota_violations} "
        f"({quota_full} services used their whole quota)"
    )
    print(f"lost: {lost}; duplicates: {duplicates}")
    print("peak RSS (VmHWM, MB): " + ", ".join(f"{name} {mb:.0f}" for name, mb in peaks.items()))


def _invariants(services: list[dict], records) -> tuple[int, int, int]:
    by_sender = defaultdict(list)
    for record in records:
        by_sender[record.mail_from].append(record.received_at)
    rate = quota = full = 0
    for service in services:
        times = sorted(by_sender.get(service["from_email"], []))
        quota += len(times) > service["daily_quota"]
        full += len(times) == service["daily_quota"]
        rate += sum(1 for a, b in itertools.pairwise(times) if b - a < service["sending_rate"] - 0.001)
    return rate, quota, full


if __name__ == "__main__":
    main()
