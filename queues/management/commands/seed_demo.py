from django.core.management.base import BaseCommand

from queues.demo import DEMO_ADMIN, demo_is_needed, seed_demo


class Command(BaseCommand):
    help = "Create demo users, contacts, tags, sending services and tasks, if the database has none."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--smtp-host", default="127.0.0.1")
        parser.add_argument("--smtp-port", type=int, default=2525)

    def handle(self, *args, smtp_host: str, smtp_port: int, **options) -> None:
        if not demo_is_needed():
            self.stdout.write("Database already has services or tasks; demo data not added.")
            return
        created = seed_demo(smtp_host=smtp_host, smtp_port=smtp_port)
        self.stdout.write(
            self.style.SUCCESS(
                "Demo data: {services} services, {users} users, {subtasks} recipients queued.".format(**created)
            )
        )
        self.stdout.write(f"Admin login: {DEMO_ADMIN[0]} / {DEMO_ADMIN[1]}")
