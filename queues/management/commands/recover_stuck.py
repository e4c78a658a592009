from django.core.management.base import BaseCommand

from queues.recovery import RULES, FailureRecoveryService


class Command(BaseCommand):
    help = (
        "Give abandoned claims back to the queue: subtasks of dead workers, claims that timed out, and tasks "
        "stuck in 'sending'. Prints what it did, counted per rule."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="show what would be done and change nothing")
        parser.add_argument(
            "--rule",
            action="append",
            choices=RULES,
            help="apply only this rule (repeatable; default: all)",
        )

    def handle(self, *args, dry_run: bool, rule: list[str] | None, **options) -> None:
        report = FailureRecoveryService().run(rules=tuple(rule or RULES), dry_run=dry_run)
        for line in report.lines():
            self.stdout.write(line)
