import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from queues.demo import DEMO_ADMIN, demo_is_needed, point_demo_services_at, queue_demo_round, seed_demo
from queues.reports import format_report, run_report
from queues.scheduler.worker import SchedulerWorker, work_remaining
from queues.sink import SmtpSink


class Command(BaseCommand):
    help = (
        "The demo main job: seed demo data on an empty database, start a local SMTP sink for the demo "
        "services, run the scheduler until the queue is empty, and print a report."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--smtp-port", type=int, default=0, help="port of the local sink (default: any free)")
        parser.add_argument("--concurrency", type=int, default=4)

    def handle(self, *args, smtp_port: int, concurrency: int, **options) -> None:
        settings.DEBUG = False  # no query log in a long run
        sink = SmtpSink(port=smtp_port).start()
        try:
            self._run(sink, concurrency)
        finally:
            sink.shutdown()

    def _run(self, sink: SmtpSink, concurrency: int) -> None:
        if demo_is_needed():
            created = seed_demo(smtp_port=sink.port)
            self.stdout.write(
                "Seeded a demo: {services} services, {users} users, {subtasks} recipients queued.".format(**created)
            )
        elif not work_remaining():
            self.stdout.write(f"Queued a new demo round: {queue_demo_round()} recipients.")
        point_demo_services_at(host="127.0.0.1", port=sink.port)
        self.stdout.write(f"Local SMTP sink on 127.0.0.1:{sink.port}; scheduler running until the queue is empty...")
        since = timezone.now()
        started = time.monotonic()
        SchedulerWorker(concurrency=concurrency, until_empty=True).run()
        elapsed = time.monotonic() - started
        self.stdout.write("")
        self.stdout.write(format_report(run_report(since=since)))
        self.stdout.write("")
        self.stdout.write(f"The sink received {sink.count()} messages in {elapsed:.1f} s.")
        self.stdout.write(
            f"Admin: `make serve`, then http://127.0.0.1:8000/admin/ (login {DEMO_ADMIN[0]} / {DEMO_ADMIN[1]})."
        )
