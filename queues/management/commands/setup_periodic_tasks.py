import json
import math

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from queues.maintenance import SWEEPS

PREFIX = "edm: "


class Command(BaseCommand):
    help = "Install the periodic maintenance sweeps as django-celery-beat schedules (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        now = timezone.now()
        for name, sweep in SWEEPS.items():
            every = max(1, math.ceil(sweep.interval))
            schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
            fields = {
                "interval": schedule,
                "task": "queues.run_sweep",
                "args": json.dumps([name]),
                "description": sweep.reason,
                "enabled": True,
            }
            # A new schedule with a start time is due at beat's first tick (django-celery-beat
            # backdates its last run); without one, the first run would come one interval after
            # the install, and a fresh deployment would have no queue sample for a minute. A
            # reinstall (every deploy) keeps the schedule's start and run history.
            _, created = PeriodicTask.objects.update_or_create(
                name=f"{PREFIX}{name}", defaults=fields, create_defaults={**fields, "start_time": now}
            )
            self.stdout.write(f"{'installed' if created else 'updated'} {name}: every {every} s - {sweep.reason}")
        stale = PeriodicTask.objects.filter(name__startswith=PREFIX).exclude(
            name__in=[f"{PREFIX}{name}" for name in SWEEPS]
        )
        for task in stale:
            self.stdout.write(f"removed {task.name[len(PREFIX) :]}")
        stale.delete()
