"""Demo data for a fresh installation: users, contacts, tags, services and newsletter tasks."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from contacts.models import Contact, Tag
from contacts.tag_manager import ContactTagManager
from queues.expansion import tasks_prepare
from queues.models import EmailService, SubTask, Task
from queues.services import task_create

DEMO_ADMIN = ("admin", "edm-demo")
DEMO_USERS = {"alice": 2000, "bob": 200, "carol": 20}  # user -> contacts
DEMO_SERVICES = [
    # name, sending_rate (s), daily_quota
    ("demo-relay-1", 0.0, 100_000),
    ("demo-relay-2", 0.0, 100_000),
    ("demo-throttled", 0.2, 500),
]
SERVICE_PREFIX = "demo-"


def demo_is_needed() -> bool:
    return not EmailService.objects.exists() and not Task.objects.exists()


@transaction.atomic
def seed_demo(*, smtp_host: str = "127.0.0.1", smtp_port: int = 2525) -> dict[str, int]:
    """Create the demo data set and queue one newsletter per demo user; returns counts."""
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
    for username, how_many in DEMO_USERS.items():
        owner = User.objects.create_user(username, f"{username}@edm.localhost", None)
        contacts = Contact.objects.bulk_create(
            Contact(owner=owner, email=f"{username}.reader{i}@example.org", first_name=f"Reader{i}")
            for i in range(how_many)
        )
        tag = Tag.objects.create(owner=owner, name="newsletter")
        tags.add_contacts_to_tag(tag.pk, [c.pk for c in contacts])
    subtasks = queue_demo_round()
    return {"services": len(DEMO_SERVICES), "users": len(DEMO_USERS), "subtasks": subtasks}


def queue_demo_round() -> int:
    """One newsletter task per demo user, to each user's 'newsletter' tag; returns the recipients queued."""
    queued = 0
    for tag in Tag.objects.filter(owner__username__in=DEMO_USERS, name="newsletter").select_related("owner"):
        number = Task.objects.filter(owner=tag.owner).count() + 1
        task = task_create(
            owner=tag.owner,
            name=f"{tag.owner.username.title()}'s newsletter #{number}",
            subject="News for {{ contact.first_name }}",
            body_text="Hello {{ contact.first_name }}, here is what is new this week.",
            body_html="<p>Hello <b>{{ contact.first_name }}</b>, here is what is new this week.</p>",
            tag=tag,
            from_name=f"{tag.owner.username.title()} Newsletters",
        )
        # Prepared here rather than in the background: the demo sends right after.
        tasks_prepare(task_id=task.pk)
        queued += SubTask.objects.filter(task=task).count()
    return queued


def point_demo_services_at(*, host: str, port: int) -> int:
    return EmailService.objects.filter(name__startswith=SERVICE_PREFIX).update(host=host, port=port)
