import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from queues.metrics_server import start_scheduler_metrics_server
from queues.scheduler.worker import SchedulerWorker, new_worker_id


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def port_number(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Run the V2 queue scheduler: claim subtasks fairly across users, send them through ready services "
        "within their rate and quota, record the outcomes. Stop with SIGTERM or Ctrl-C (sends in flight finish)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=128,
            help="sender threads of this process (default 128); each service's max_connections caps its own sends",
        )
        parser.add_argument("--once", action="store_true", help="one pass: claim one batch, send it, record, exit")
        parser.add_argument("--until-empty", action="store_true", help="exit when no work is left")
        parser.add_argument("--worker-id", default=None, help="name of this worker (default host:pid:random)")
        parser.add_argument("--stats-file", default=None, help="write this process's figures as JSON here on exit")
        parser.add_argument(
            "--metrics-port",
            type=port_number,
            default=0,
            help="serve this process's Prometheus metrics (edm_mails_sent_total...) on this port; 0 = off (default)",
        )
        parser.add_argument(
            "--maintenance",
            choices=["auto", "on", "off"],
            default="auto",
            help="run the periodic sweeps (recovery, quota reset, alerts, prune) in this process: "
            "auto = when no Celery broker is configured (default)",
        )

    def handle(
        self,
        *args,
        concurrency: int,
        once: bool,
        until_empty: bool,
        worker_id: str | None,
        stats_file: str | None,
        maintenance: str,
        metrics_port: int,
        **options,
    ) -> None:
        worker_id = worker_id or new_worker_id()
        if metrics_port:
            try:
                start_scheduler_metrics_server(metrics_port)
            except OSError as exc:
                raise CommandError(f"cannot serve metrics on port {metrics_port}: {exc.strerror or exc}") from None
        name_connections(f"edm run_scheduler {worker_id}")
        # A long-running process must not keep Django's DEBUG query log.
        settings.DEBUG = False
        if maintenance == "auto":
            maintenance = "off" if settings.CELERY_BROKER_URL else "on"
        worker = SchedulerWorker(
            concurrency=concurrency,
            once=once,
            until_empty=until_empty,
            worker_id=worker_id,
            maintenance=maintenance == "on" and not once,
        )
        code = worker.run()
        if stats_file:
            Path(stats_file).write_text(json.dumps(worker.figures()))
        if code:
            raise CommandError(f"scheduler exited with status {code}", returncode=code)


def name_connections(name: str) -> None:
    """Show the process in pg_stat_activity (PostgreSQL's application_name)."""
    for alias in connections:
        settings_dict = connections[alias].settings_dict
        if settings_dict["ENGINE"] == "django.db.backends.postgresql":
            settings_dict.setdefault("OPTIONS", {})["application_name"] = name[:63]
