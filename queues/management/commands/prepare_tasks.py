import uuid

from django.core.management.base import BaseCommand

from queues.expansion import tasks_prepare
from queues.management.commands.run_scheduler import name_connections, positive_int


class Command(BaseCommand):
    help = (
        "Expand preparing tasks' recipients into subtasks until none is left (what the Celery task "
        "queues.prepare_task and run_scheduler's maintenance thread do). Safe beside other preparers; "
        "a run stopped half-way is resumed by the next one."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--task", type=uuid.UUID, default=None, help="only this task (its id)")
        parser.add_argument(
            "--chunk-size",
            type=positive_int,
            default=None,
            help="recipients per transaction (default 20000 on PostgreSQL, 2000 on SQLite)",
        )

    def handle(self, *args, task: uuid.UUID | None, chunk_size: int | None, **options) -> None:
        name_connections("edm prepare_tasks")
        created = tasks_prepare(task_id=task, size=chunk_size)
        self.stdout.write(f"{created} subtasks created")
