"""The scheduler's throughput at relay latencies and configured rates, each figure next to its ceiling.

    python bench/throughput.py [--scenario all|rate|relay50|relay50-one|scaleout|zero]
                               [--mails N] [--latency-ms L] [--scheduler-args "--concurrency 8"]

Every run: a fresh benchmark database (BENCH_DATABASE_URL, PostgreSQL), the
measuring relay (bench/relay.py) in its own process, services pointing at it,
tasks queued through ``task_create``, then ``manage.py run_scheduler
--until-empty`` processes with their default options (plus ``--scheduler-args``)
until the queue is empty. Mails/s are counted at the relay, from the first
MAIL FROM to the last reply. The ceiling beside each figure is raw smtplib
(bench/smtp_ceiling.py) over as many connections as the services' caps allow,
to the same relay, with messages of the size the scheduler sent, in the same
run: machines differ threefold in speed, the ratio less so.

Scenarios:

- ``rate``: S services (--services, default 2) with sending_rate R (--rate,
  default 0.05 s), 2 scheduler processes, 50 ms relay: each service's mails/s
  as a share of 1/R, and the smallest gap between two of one service's MAIL
  FROMs at the relay (a service may send once per R: gaps under R - 2 ms are
  counted);
- ``relay50``: a 50 ms relay, 5 services (sending_rate 0), 1 process: mails/s
  beside raw smtplib over the sum of the services' max_connections, and each
  service's peak of open connections beside its max_connections;
- ``relay50-one``: the same with one service: mails/s beside max_connections /
  latency and raw smtplib over max_connections;
- ``scaleout``: a 5 ms relay, 5 services, 20,000 mails, 1 process then 3: mails/s
  of each and their ratio;
- ``zero``: a relay that answers at once, 5 services, 1 process (for reference).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import relay as relay_client
from harness import ROOT, bench_services_create, bench_task_create, recreate_database, setup_django

BENCH = Path(__file__).resolve().parent


@dataclass
class Scenario:
    name: str
    services: int
    latency_ms: float
    mails: int
    processes: tuple[int, ...] = (1,)
    sending_rate: float = 0.0
    description: str = ""


SCENARIOS = {
    "rate": Scenario("rate", services=2, latency_ms=50, mails=1000, processes=(2,), sending_rate=0.05),
    "relay50": Scenario("relay50", services=5, latency_ms=50, mails=5000),
    "relay50-one": Scenario("relay50-one", services=1, latency_ms=50, mails=3000),
    "scaleout": Scenario("scaleout", services=5, latency_ms=5, mails=20000, processes=(1, 3)),
    "zero": Scenario("zero", services=5, latency_ms=0, mails=20000),
}


@dataclass
class Measured:
    """One drain through the relay and its ceiling."""

    scenario: Scenario
    processes: int
    relay: dict[str, Any]
    ceiling: dict[str, Any]
    queued: int
    sent: int
    max_connections: dict[str, int]  # from_email -> the service's cap
    drain_seconds: float  # schedulers' start to exit, process start included
    cpu: CpuUse | None = None
    extras: list[str] = field(default_factory=list)

    @property
    def mails_per_s(self) -> float:
        return self.relay["mails_per_s"] or 0.0

    @property
    def ceiling_per_s(self) -> float:
        return self.ceiling["mails_per_s"] or 0.0


@dataclass
class CpuUse:
    """Where the machine's CPU went during one drain."""

    schedulers_seconds: float  # user + system of the run_scheduler processes
    machine_busy_seconds: float  # every process's (PostgreSQL and the relay included), from /proc/stat
    wall_seconds: float

    @property
    def machine_busy_cores(self) -> float:
        return self.machine_busy_seconds / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def schedulers_cores(self) -> float:
        return self.schedulers_seconds / self.wall_seconds if self.wall_seconds else 0.0


def _machine_busy_seconds() -> float:
    """CPU seconds every core has spent not idle since boot (Linux; 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(v) for v in fields[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class RelayProcess:
    """bench/relay.py as a child process."""

    def __init__(self, latency_ms: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "relay.py"), "--latency-ms", str(latency_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port, self.control_port = (int(word) for word in self.proc.stdout.readline().split())

    def stats(self) -> dict[str, Any]:
        return relay_client.request(self.control_port, "stats times")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


def fresh_database() -> None:
    """Drop and re-create the benchmark database, migrated; this process's pooled connections go first."""
    from django.core.management import call_command
    from django.db import connection

    connection.close()
    if hasattr(connection, "close_pool"):
        connection.close_pool()
    recreate_database(os.environ["DATABASE_URL"])
    call_command("migrate", verbosity=0)


def queue_mails(*, port: int, scenario: Scenario, mails: int, users: int) -> list[str]:
    """The services (pointing at the relay) and the tasks; returns the services' from_email addresses."""
    from accounts.models import User

    services = bench_services_create(port=port, count=scenario.services, sending_rate=scenario.sending_rate)
    users = max(1, min(users, mails))
    for i in range(users):
        owner = User.objects.create(username=f"u{i}")
        count = mails // users + (1 if i < mails % users else 0)
        bench_task_create(owner=owner, name=f"bench {i}", recipients=count, domain=f"u{i}.example")
    return [s.from_email for s in services]


def drain(
    scenario: Scenario, *, processes: int, mails: int, users: int, scheduler_args: list[str], timeout: float
) -> Measured:
    from django.db import connection

    from queues.models import EmailService, SubTask

    fresh_database()
    relay = RelayProcess(scenario.latency_ms)
    try:
        senders = queue_mails(port=relay.port, scenario=scenario, mails=mails, users=users)
        caps = dict(EmailService.objects.values_list("from_email", "max_connections"))
        queued = SubTask.objects.count()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
        connection.close()
        env = dict(os.environ, LOG_LEVEL="WARNING")
        command = [sys.executable, str(ROOT / "manage.py"), "run_scheduler", "--until-empty", *scheduler_args]
        # The relay is a child too, but it is still running: only reaped children count here.
        children_before, busy_before = _children_cpu_seconds(), _machine_busy_seconds()
        started = time.perf_counter()
        procs = [subprocess.Popen(command, env=env) for _ in range(processes)]
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for other in procs:
                    other.terminate()
                for other in procs:
                    other.wait(60)
                break
        drain_seconds = time.perf_counter() - started
        cpu = CpuUse(
            schedulers_seconds=_children_cpu_seconds() - children_before,
            machine_busy_seconds=_machine_busy_seconds() - busy_before,
            wall_seconds=drain_seconds,
        )
        stats = relay.stats()
    finally:
        relay.stop()
    sent = SubTask.objects.filter(status="sent").count()
    size = round(stats["bytes"] / stats["accepted"]) if stats["accepted"] else 1500
    ceiling = measure_ceiling(
        latency_ms=scenario.latency_ms,
        connections=sum(caps.values()),
        mails=max(mails, 1),
        size=size,
        senders=senders,
        processes=processes,
    )
    return Measured(scenario, processes, stats, ceiling, queued, sent, caps, drain_seconds, cpu)


def measure_ceiling(
    *, latency_ms: float, connections: int, mails: int, size: int, senders: list[str], processes: int
) -> dict[str, Any]:
    """Raw smtplib's mails/s over ``connections`` to a fresh relay of the same latency."""
    from smtp_ceiling import run_ceiling

    relay = RelayProcess(latency_ms)
    try:
        run_ceiling(
            port=relay.port, connections=connections, mails=mails, size=size, senders=senders, processes=processes
        )
        stats = relay.stats()
    finally:
        relay.stop()
    stats["connections_used"] = connections
    stats["processes"] = processes
    return stats


def rate_extras(measured: Measured) -> tuple[float, float, list[str]]:
    """Mails/s of the rate-limited services as a share of 1/R; the figure, the ceiling and the extras."""
    rate = measured.scenario.sending_rate
    services = measured.relay["services"]
    shares = [(s["rate_per_s"] or 0.0) * rate * 100 for s in services.values()]
    gaps = [s["min_gap_ms"] for s in services.values() if s["min_gap_ms"] is not None]
    floor_ms = rate * 1000 - 2
    below = sum(
        1 for s in services.values() for a, b in itertools.pairwise(s["mail_from"]) if (b - a) * 1000 < floor_ms
    )
    figure = sum(s["rate_per_s"] or 0.0 for s in services.values())
    ceiling = len(services) / rate if rate else 0.0
    extras = [
        "per service " + ", ".join(f"{share:.0f} %" for share in shares) + f" of 1/R = {1 / rate:.0f}/s",
        f"min gap {min(gaps):.1f} ms (R - 2 ms = {floor_ms:.0f} ms), {below} gaps below" if gaps else "no gaps",
        f"raw smtplib over {measured.ceiling['connections_used']} connections: {measured.ceiling_per_s:,.0f} mails/s",
    ]
    return figure, ceiling, extras


def connection_extras(measured: Measured) -> list[str]:
    services = measured.relay["services"]
    peaks = [
        f"{services.get(addr, {}).get('peak_connections', 0)}/{cap}" for addr, cap in measured.max_connections.items()
    ]
    return [
        "peak connections per service/max_connections " + " ".join(peaks),
        f"overall peak {measured.relay['connections']['peak']}",
    ]


def delivery_extra(measured: Measured) -> list[str]:
    extras = []
    if measured.sent != measured.queued or measured.relay["accepted"] != measured.queued:
        extras.append(f"INCOMPLETE: sent {measured.sent}, relay {measured.relay['accepted']} of {measured.queued}")
    return extras


def cpu_extra(measured: Measured) -> list[str]:
    cpu = measured.cpu
    if cpu is None or not measured.sent:
        return []
    per_mail_ms = cpu.schedulers_seconds / measured.sent * 1000
    return [
        f"CPU: schedulers {cpu.schedulers_cores:.2f} cores ({per_mail_ms:.2f} ms/mail), "
        f"machine {cpu.machine_busy_cores:.2f} of {os.cpu_count()} cores busy"
    ]


def report_row(label: str, figure: float, ceiling: float, ceiling_name: str, extras: list[str]) -> None:
    ratio = f"{figure / ceiling * 100:.0f} %" if ceiling else "-"
    print(f"| {label} | {figure:,.0f} | {ceiling:,.0f} ({ceiling_name}) | {ratio} | {'; '.join(extras)} |", flush=True)


def scaleout_bound(first: Measured, last: Measured) -> str:
    """What this machine's cores allow: N processes can at most use every core at the first run's CPU per mail."""
    if first.cpu is None or not first.cpu.machine_busy_cores:
        return ""
    cores = os.cpu_count() or 1
    bound = cores / first.cpu.machine_busy_cores
    return (
        f"the {first.processes}-process run kept {first.cpu.machine_busy_cores:.2f} of {cores} cores busy: "
        f"at its CPU per mail the machine allows at most {bound:.2f}x"
    )


def run_scenario(scenario: Scenario, args: argparse.Namespace, scheduler_args: list[str]) -> list[Measured]:
    results = []
    for processes in scenario.processes:
        measured = drain(
            scenario,
            processes=processes,
            mails=args.mails or scenario.mails,
            users=args.users,
            scheduler_args=scheduler_args,
            timeout=args.timeout,
        )
        results.append(measured)
        label = (
            f"{scenario.name}: {scenario.services} svc, {scenario.latency_ms:g} ms relay, "
            f"{processes} proc, {measured.queued} mails"
        )
        common = [
            *delivery_extra(measured),
            f"drain incl. start {measured.drain_seconds:.1f} s",
            f"{measured.relay['bytes'] // max(1, measured.relay['accepted'])} B/mail",
            *cpu_extra(measured),
        ]
        if scenario.sending_rate:
            figure, ceiling, extras = rate_extras(measured)
            report_row(f"{label}, rate {scenario.sending_rate:g} s", figure, ceiling, "S/R", extras + common)
            continue
        extras = connection_extras(measured)
        if scenario.services == 1 and scenario.latency_ms:
            cap = next(iter(measured.max_connections.values()))
            bound = cap / (scenario.latency_ms / 1000)
            extras.insert(0, f"max_connections/latency {bound:,.0f}/s ({measured.mails_per_s / bound * 100:.0f} %)")
        ceiling_name = f"raw smtplib, {measured.ceiling['connections_used']} conn"
        if processes > 1:
            ceiling_name += f" in {processes} proc"
        report_row(label, measured.mails_per_s, measured.ceiling_per_s, ceiling_name, extras + common)
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(
            f"| {scenario.name}: {last.processes} proc / {first.processes} proc | "
            f"{last.mails_per_s / first.mails_per_s:.2f}x | "
            f"{last.ceiling_per_s / first.ceiling_per_s:.2f}x (raw smtplib) | | {scaleout_bound(first, last)} |",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["all", *SCENARIOS], default="all")
    parser.add_argument("--mails", type=int, default=0, help="mails per run (default: the scenario's)")
    parser.add_argument("--latency-ms", type=float, default=None, help="relay latency (default: the scenario's)")
    parser.add_argument("--services", type=int, default=None, help="services of the rate scenario (default 2)")
    parser.add_argument("--rate", type=float, default=None, help="sending_rate of the rate scenario (default 0.05)")
    parser.add_argument("--users", type=int, default=20, help="tasks are spread over this many users")
    parser.add_argument("--scheduler-args", default="", help='added to every run_scheduler, e.g. "--concurrency 8"')
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a drain may take before it is stopped")
    parser.add_argument("--json", default=None, help="also write every run's figures (relay stats included) here")
    args = parser.parse_args()

    vendor = setup_django()
    if vendor != "postgresql":
        print("note: several scheduler processes want PostgreSQL (BENCH_DATABASE_URL=postgres://...)", flush=True)
    scheduler_args = shlex.split(args.scheduler_args)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    print(
        f"database {vendor}; {os.cpu_count()} CPUs; run_scheduler --until-empty {' '.join(scheduler_args)}".rstrip(),
        flush=True,
    )
    print("| scenario | mails/s | ceiling | ratio | extras |\n|---|---|---|---|---|", flush=True)
    everything = []
    for name in names:
        scenario = SCENARIOS[name]
        if args.latency_ms is not None:
            scenario.latency_ms = args.latency_ms
        if name == "rate":
            scenario.services = args.services or scenario.services
            scenario.sending_rate = args.rate if args.rate is not None else scenario.sending_rate
        for measured in run_scenario(scenario, args, scheduler_args):
            everything.append(
                {
                    "scenario": name,
                    "processes": measured.processes,
                    "queued": measured.queued,
                    "sent": measured.sent,
                    "drain_seconds": measured.drain_seconds,
                    "max_connections": measured.max_connections,
                    "relay": measured.relay,
                    "ceiling": measured.ceiling,
                }
            )
    if args.json:
        Path(args.json).write_text(json.dumps(everything))


if __name__ == "__main__":
    main()
