"""Drain N subtasks through S services (sending_rate 0) into a local SMTP sink.

    python bench/drain.py [--subtasks 20000] [--services 10] [--users 100]
                          [--processes 1] [--concurrency 8] [--latency-ms 0]

Uses BENCH_DATABASE_URL (PostgreSQL for several processes). Prints mails/s,
claim latency p50/p99, first-send wait p50/p99 and RSS per scheduler process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, bench_services_create, bench_task_create, percentile, proc_status_mb, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=20000)
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--batch", type=int, default=50, help="queue.claim_batch_size")
    parser.add_argument(
        "--sink",
        choices=["aiosmtpd", "fast"],
        default="aiosmtpd",
        help="aiosmtpd (the tests' SMTP server) or bench/fast_sink.py (a minimal SMTP peer using far less CPU)",
    )
    args = parser.parse_args()

    vendor = setup_django()
    from django.db import connection

    from accounts.models import User
    from config.services import ConfigManagerService
    from queues.expansion import tasks_prepare
    from queues.models import SendAttempt, SubTask, TaskWaitMetric

    sink_script = "sink_server.py" if args.sink == "aiosmtpd" else "fast_sink.py"
    sink = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / sink_script), "--latency-ms", str(args.latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(sink.stdout.readline())

    ConfigManagerService.set_config("queue", "claim_batch_size", args.batch)
    bench_services_create(port=port, count=args.services)
    users = [User.objects.create(username=f"u{i}") for i in range(args.users)]
    per_user = args.subtasks // args.users
    setup_start = time.perf_counter()
    for i, user in enumerate(users):
        bench_task_create(owner=user, name=f"bench {i}", recipients=per_user, domain=f"u{i}.example")
    tasks_prepare()  # tasks over 1,000 recipients are prepared in the background otherwise
    setup_seconds = time.perf_counter() - setup_start
    total = SubTask.objects.count()
    if vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    connection.close()

    env = dict(os.environ, LOG_LEVEL="WARNING")
    stats_dir = Path(tempfile.mkdtemp(prefix="edm-bench-"))
    from django.utils import timezone

    launched = timezone.now()
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "run_scheduler",
                "--until-empty",
                "--concurrency",
                str(args.concurrency),
                "--stats-file",
                str(stats_dir / f"{i}.json"),
            ],
            env=env,
        )
        for i in range(args.processes)
    ]
    rss = {p.pid: [] for p in procs}
    cpu = {}
    while len(cpu) < len(procs):
        for p in procs:
            if p.pid in cpu:
                continue
            rss[p.pid].append(proc_status_mb(p.pid))
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                cpu[p.pid] = usage.ru_utime + usage.ru_stime
        time.sleep(0.2)
    wall = time.perf_counter() - started
    sink_cpu = _cpu_seconds(sink.pid)
    sink.terminate()
    sink_summary = sink.stdout.read().strip()

    stats = [json.loads((stats_dir / f"{i}.json").read_text()) for i in range(args.processes)]
    span = SendAttempt.objects.filter(outcome="sent")
    first = span.order_by("started_at").values_list("started_at", flat=True).first()
    last = span.order_by("-finished_at").values_list("finished_at", flat=True).first()
    sent = SubTask.objects.filter(status="sent").count()
    # Every task was queued before the schedulers started: its wait counts from the launch.
    waits = [
        (m.first_send_time - max(m.queue_entry_time, launched)).total_seconds()
        for m in TaskWaitMetric.objects.exclude(first_send_time=None)
    ]
    drain = (last - first).total_seconds()
    print(
        f"database {vendor}; {total} subtasks, {args.users} users, {args.services} services (rate 0); "
        f"{args.sink} sink, latency {args.latency_ms:g} ms; {args.processes} scheduler process(es) x concurrency "
        f"{args.concurrency}, claim batch {args.batch}"
    )
    print(f"task creation (API-level task_create): {total / setup_seconds:.0f} subtasks/s")
    print(f"sent {sent}/{total}; sink {sink_summary}")
    print(f"mails/s: {sent / drain:.0f} (first to last send, {drain:.2f} s); {sent / wall:.0f} incl. process start")
    for s in stats:
        print(
            f"  worker {s['worker_id']}: sent {s['sent']}, {s['claims']} claims, "
            f"claim p50 {s['claim_ms_p50']:.2f} ms p99 {s['claim_ms_p99']:.2f} ms"
        )
    print(
        f"first-send wait across {len(waits)} tasks: p50 {percentile(waits, 50) * 1000:.0f} ms, "
        f"p99 {percentile(waits, 99) * 1000:.0f} ms (from the schedulers' launch, process start included)"
    )
    sent_total = max(sent, 1)
    print(
        f"CPU per mail: schedulers {sum(cpu.values()) / sent_total * 1000:.2f} ms "
        f"(all {len(cpu)} processes, start-up included), sink {sink_cpu / sent_total * 1000:.2f} ms"
    )
    for pid, samples in rss.items():
        samples = [s for s in samples if s]
        if samples:
            mid = samples[len(samples) // 2]
            print(
                f"  RSS pid {pid}: start {samples[0]:.0f} MB, middle {mid:.0f} MB, end {samples[-1]:.0f} MB, "
                f"peak {max(samples):.0f} MB"
            )


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
