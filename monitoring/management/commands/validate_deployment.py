import os
import urllib.parse

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email
from django.db import DatabaseError

from monitoring.services import validation
from monitoring.services.validation import CHECKS, FAIL, SKIP, CheckResult, Endpoint

MAX_THROUGHPUT_TASKS = 1000  # every task is a mail to one person's mailbox


def positive_float(value: str) -> float:
    number = float(value)
    if not 0 < number < float("inf"):
        raise ValueError(value)
    return number


def task_count(value: str) -> int:
    number = int(value)
    if not 1 <= number <= MAX_THROUGHPUT_TASKS:
        raise ValueError(value)
    return number


def http_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(value)
    return value.rstrip("/")


def email_address(value: str) -> str:
    try:
        validate_email(value)
    except ValidationError:
        raise ValueError(value) from None
    return value


class Command(BaseCommand):
    help = (
        "Validate a running deployment (the plan's production validation): system health over HTTP, one real "
        "mail sent end to end by the running schedulers to a test recipient, monitoring data being collected, "
        "and throughput in tasks/s. Prints one PASS/FAIL line per check; exits 1 if any fails."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--base-url",
            type=http_url,
            default="http://127.0.0.1:8000",
            help="the web process to check (default http://127.0.0.1:8000)",
        )
        parser.add_argument(
            "--token",
            default=None,
            help="a staff API token, to list the failing health checks (default: $EDM_VALIDATE_TOKEN; "
            "prefer the variable, a command line is visible to other users)",
        )
        parser.add_argument(
            "--recipient",
            type=email_address,
            default=None,
            help="the only address validation mail is sent to (default: EDM_VALIDATE_RECIPIENT)",
        )
        parser.add_argument(
            "--timeout",
            type=positive_float,
            default=120.0,
            help="seconds to wait for the schedulers to send the end-to-end mail, and again for the "
            "throughput tasks (default 120)",
        )
        parser.add_argument(
            "--min-tasks-per-second",
            type=positive_float,
            default=5.0,
            help="throughput floor (default 5, the plan's)",
        )
        parser.add_argument(
            "--throughput-tasks",
            type=task_count,
            default=50,
            help=f"one-recipient tasks queued for the throughput check (default 50, at most {MAX_THROUGHPUT_TASKS})",
        )
        parser.add_argument(
            "--max-sample-age",
            type=positive_float,
            default=180.0,
            help="seconds within which the sample_queue sweep (every 60 s) must have written a sample (default 180)",
        )
        parser.add_argument(
            "--allow-degraded", action="store_true", help="a degraded system health passes (its reasons are listed)"
        )
        parser.add_argument(
            "--skip", action="append", choices=CHECKS, default=[], help="do not run this check (repeatable)"
        )

    def handle(self, *args, **options) -> None:
        skip = set(options["skip"])
        endpoint = Endpoint(options["base_url"], options["token"] or os.environ.get("EDM_VALIDATE_TOKEN") or None)
        recipient = None
        if not {"end-to-end", "throughput"} <= skip:
            recipient = self._recipient(options["recipient"])
        self.stdout.write(f"validating {endpoint.display}" + (f", test recipient {recipient}" if recipient else ""))
        results = []
        for name in CHECKS:
            result = self._run(name, endpoint, recipient, skip, results, options)
            results.append(result)
            for line in result.lines():
                self.stdout.write(line)
            self.stdout.flush()
        failed = [result.name for result in results if result.failed]
        ran = [result for result in results if result.status != SKIP]
        if failed:
            raise CommandError(f"deployment validation failed: {', '.join(failed)}", returncode=1)
        self.stdout.write(f"deployment validated: {len(ran)} check(s) passed")

    def _recipient(self, given: str | None) -> str:
        value = given or getattr(settings, "EDM_VALIDATE_RECIPIENT", "") or os.environ.get("EDM_VALIDATE_RECIPIENT", "")
        if not value:
            raise CommandError(
                "no test recipient: give --recipient or set EDM_VALIDATE_RECIPIENT (or skip end-to-end and throughput)",
                returncode=2,
            )
        try:
            return email_address(value)
        except ValueError:
            raise CommandError(f"EDM_VALIDATE_RECIPIENT {value!r} is not an e-mail address", returncode=2) from None

    def _run(self, name, endpoint, recipient, skip, previous, options) -> CheckResult:
        if name in skip:
            return CheckResult(name, SKIP, "skipped (--skip)")
        if name == "throughput" and any(r.name == "end-to-end" and r.status == FAIL for r in previous):
            return CheckResult(name, SKIP, "not run: the end-to-end mail did not go through")
        try:
            if name == "health":
                return validation.check_health(endpoint, allow_degraded=options["allow_degraded"])
            if name == "end-to-end":
                return validation.check_end_to_end(recipient=recipient, timeout=options["timeout"])
            if name == "monitoring":
                return validation.check_monitoring(endpoint, max_sample_age=options["max_sample_age"])
            return validation.check_throughput(
                recipient=recipient,
                count=options["throughput_tasks"],
                timeout=options["timeout"],
                min_rate=options["min_tasks_per_second"],
            )
        except DatabaseError as exc:
            return CheckResult(name, FAIL, f"database error ({type(exc).__name__})")
