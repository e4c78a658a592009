import json
import math

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from queues.maintenance import SWEEPS

PREFIX = "edm: "


class Command(BaseCommand):
    help = "Install the periodic maintenance sweeps as django-celery-beat schedules (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        for name, sweep in SWEEPS.items():
            every = max(1, math.ceil(sweep.interval))
            schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
            _, created = PeriodicTask.objects.update_or_create(
                name=f"{PREFIX}{name}",
                defaults={
                    "interval": schedule,
                    "task": "queues.run_sweep",
                    "args": json.dumps([name]),
                    "description": sweep.reason,
                    "enabled": True,
                },
            )
            self.stdout.write(f"{'installed' if created else 'updated'} {name}: every {every} s - {sweep.reason}")
        stale = PeriodicTask.objects.filter(name__startswith=PREFIX).exclude(
            name__in=[f"{PREFIX}{name}" for name in SWEEPS]
        )
        for task in stale:
            self.stdout.write(f"removed {task.name[len(PREFIX) :]}")
        stale.delete()
