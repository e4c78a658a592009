"""Demo data for a fresh installation: users, contacts, tags, services and tasks."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from contacts.models import Contact, Tag
from contacts.tag_manager import ContactTagManager
from queues.models import EmailService, SubTask, Task

DEMO_ADMIN = ("admin", "edm-demo")
DEMO_USERS = {"alice": 600, "bob": 40, "carol": 8}  # user -> contacts
DEMO_SERVICES = [
    # name, sending_rate (s), daily_quota
    ("demo-relay-1", 0.0, 100_000),
    ("demo-relay-2", 0.0, 100_000),
    ("demo-throttled", 0.5, 500),
]


def demo_is_needed() -> bool:
    return not EmailService.objects.exists() and not Task.objects.exists()


@transaction.atomic
def seed_demo(*, smtp_host: str = "127.0.0.1", smtp_port: int = 2525) -> dict[str, int]:
    """Create the demo data set; returns how many of each were created."""
    User = get_user_model()
    if not User.objects.filter(username=DEMO_ADMIN[0]).exists():
        User.objects.create_superuser(DEMO_ADMIN[0], "admin@edm.localhost", DEMO_ADMIN[1])

    for name, rate, quota in DEMO_SERVICES:
        EmailService.objects.create(
            name=name,
            host=smtp_host,
            port=smtp_port,
            security=EmailService.Security.NONE,
            from_email=f"{name}@edm.localhost",
            sending_rate=rate,
            daily_quota=quota,
        )

    tags = ContactTagManager()
    subtasks = 0
    for username, how_many in DEMO_USERS.items():
        owner = User.objects.create_user(username, f"{username}@edm.localhost", None)
        contacts = Contact.objects.bulk_create(
            Contact(owner=owner, email=f"{username}.reader{i}@example.org", first_name=f"Reader{i}")
            for i in range(how_many)
        )
        tag = Tag.objects.create(owner=owner, name="newsletter")
        tags.add_contacts_to_tag(tag.pk, [c.pk for c in contacts])
        task = Task.objects.create(
            owner=owner,
            name=f"{username.title()}'s newsletter",
            subject="News for {{ contact.first_name }}",
            body_text="Hello {{ contact.first_name }}, here is what is new.",
            body_html="<p>Hello <b>{{ contact.first_name }}</b>, here is what is new.</p>",
            tag=tag,
        )
        SubTask.objects.bulk_create(
            SubTask(task=task, owner=owner, contact=c, recipient_email=c.email, priority=task.priority)
            for c in contacts
        )
        subtasks += len(contacts)
    return {"services": len(DEMO_SERVICES), "users": len(DEMO_USERS), "subtasks": subtasks}
