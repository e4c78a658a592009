"""factory-boy factories for every model; conftest.py exposes them as fixtures."""

from __future__ import annotations

import datetime as dt

import factory
from django.utils import timezone

from accounts.models import User
from config.models import ConfigItem
from contacts.models import Contact, Tag
from monitoring.models import Alert, QueueSample
from queues.models import EmailService, SendAttempt, SubTask, Task, TaskWaitMetric, WorkerHeartbeat


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("password")


class ContactFactory(factory.django.DjangoModelFactory[Contact]):
    class Meta:
        model = Contact

    owner = factory.SubFactory(UserFactory)
    email = factory.Sequence(lambda n: f"contact{n}@example.org")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")


class TagFactory(factory.django.DjangoModelFactory[Tag]):
    class Meta:
        model = Tag

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"tag-{n}")
    contacts = factory.LazyFunction(list)


class EmailServiceFactory(factory.django.DjangoModelFactory[EmailService]):
    class Meta:
        model = EmailService

    name = factory.Sequence(lambda n: f"service-{n}")
    transport = EmailService.Transport.SMTP
    host = "127.0.0.1"
    port = 2525
    security = EmailService.Security.NONE
    from_email = factory.Sequence(lambda n: f"sender{n}@edm.example")
    daily_quota = 1000
    sending_rate = 0.0


class TaskFactory(factory.django.DjangoModelFactory[Task]):
    class Meta:
        model = Task

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Campaign {n}")
    subject = "Hello {{ contact.first_name }}"
    body_text = "Hi {{ contact.first_name }}, this is our newsletter."
    body_html = "<p>Hi {{ contact.first_name }}, this is our <b>newsletter</b>.</p>"


class SubTaskFactory(factory.django.DjangoModelFactory[SubTask]):
    class Meta:
        model = SubTask

    task = factory.SubFactory(TaskFactory)
    owner = factory.SelfAttribute("task.owner")
    recipient_email = factory.Sequence(lambda n: f"rcpt{n}@example.org")
    priority = factory.SelfAttribute("task.priority")
    message_id = factory.Sequence(lambda n: f"<factory-{n}@edm.localhost>")


class TaskWaitMetricFactory(factory.django.DjangoModelFactory[TaskWaitMetric]):
    class Meta:
        model = TaskWaitMetric

    task = factory.SubFactory(TaskFactory)
    user = factory.SelfAttribute("task.owner")
    queue_entry_time = factory.LazyFunction(timezone.now)


class ConfigItemFactory(factory.django.DjangoModelFactory[ConfigItem]):
    class Meta:
        model = ConfigItem

    category = "queue"
    key = factory.Sequence(lambda n: f"setting_{n}")
    value = 1


class AlertFactory(factory.django.DjangoModelFactory[Alert]):
    class Meta:
        model = Alert

    alert_type = "service_failing"
    severity = Alert.Severity.WARNING
    subject = factory.Sequence(lambda n: f"service:{n}")
    message = "The service failed 5 sends in a row."


class WorkerHeartbeatFactory(factory.django.DjangoModelFactory[WorkerHeartbeat]):
    class Meta:
        model = WorkerHeartbeat

    worker_id = factory.Sequence(lambda n: f"host-a:{1000 + n}:worker")
    hostname = "host-a"
    pid = factory.Sequence(lambda n: 1000 + n)
    concurrency = 4
    started_at = factory.LazyFunction(timezone.now)
    last_seen_at = factory.LazyFunction(timezone.now)


class SendAttemptFactory(factory.django.DjangoModelFactory[SendAttempt]):
    class Meta:
        model = SendAttempt

    subtask = factory.SubFactory(SubTaskFactory)
    service = factory.SubFactory(EmailServiceFactory)
    worker_id = "host-a:1000:worker"
    started_at = factory.LazyFunction(timezone.now)
    finished_at = factory.LazyAttribute(lambda o: o.started_at + dt.timedelta(milliseconds=120))
    outcome = SendAttempt.Outcome.SENT
    smtp_code = 250


class QueueSampleFactory(factory.django.DjangoModelFactory[QueueSample]):
    class Meta:
        model = QueueSample

    taken_at = factory.LazyFunction(timezone.now)
    pending = 0
    in_flight = 0
    ready_services = 0
    live_schedulers = 0
    sent_total = 0
    failed_total = 0
