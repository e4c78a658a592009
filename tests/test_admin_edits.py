"""Admin edits go through the same service functions and validation as the API."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from queues.models import EmailService, Task, UserQueue
from queues.services import task_create


@pytest.fixture
def staff_client(client, user_factory):
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    return client


def queued_task(owner, **fields):
    content = {"name": "Spring", "subject": "Hi {{ contact.first_name }}", "body_text": "Hello", **fields}
    return task_create(owner=owner, recipients=["a@example.org", "b@example.org"], **content)


def task_form(task: Task, **fields) -> dict[str, str]:
    """The admin change form of a task as posted."""
    scheduled = timezone.localtime(task.scheduled_at) if task.scheduled_at else None
    return {
        "name": task.name,
        "subject": task.subject,
        "body_text": task.body_text,
        "body_html": task.body_html,
        "from_name": task.from_name,
        "reply_to": task.reply_to,
        "priority": str(task.priority),
        "scheduled_at_0": scheduled.strftime("%Y-%m-%d") if scheduled else "",
        "scheduled_at_1": scheduled.strftime("%H:%M:%S") if scheduled else "",
        **fields,
    }


def post_task(client, task: Task, **fields):
    return client.post(reverse("admin:queues_task_change", args=[task.pk]), task_form(task, **fields))


def form_errors(response) -> dict[str, list[str]]:
    assert response.status_code == 200, response.status_code
    form = response.context["adminform"].form
    return {field: [str(e) for e in errors] for field, errors in form.errors.items()}


def row(task: Task) -> dict:
    return Task.objects.values().get(pk=task.pk)


def test_a_header_injection_in_from_name_is_a_form_error_and_nothing_changes(staff_client, user):
    task = queued_task(user)
    before = row(task)

    response = post_task(staff_client, task, from_name="Evil\r\nBcc: x@example.com")

    assert form_errors(response) == {"from_name": ["must be one line of at most 100 characters"]}
    assert row(task) == before


@pytest.mark.parametrize(
    ("field", "source", "message"),
    [
        ("subject", "Hi {% include 'x.html' %}", "subject: the tag {% include %} is not allowed in mail templates"),
        ("body_text", "{% ssi '/etc/passwd' %}", "body_text: the tag {% ssi %} is not allowed in mail templates"),
        ("body_html", "{% load static %}<p>x</p>", "body_html: the tag {% load %} is not allowed in mail templates"),
        ("body_text", "{% if %}", "body_text: Unexpected end of expression in if tag."),
    ],
    ids=["include", "ssi", "load", "syntax"],
)
def test_a_template_error_is_a_form_error_and_nothing_changes(staff_client, user, field, source, message):
    task = queued_task(user)
    before = row(task)

    response = post_task(staff_client, task, **{field: source})

    assert form_errors(response) == {field: [message]}
    assert row(task) == before


def test_moving_scheduled_at_earlier_takes_effect_at_the_next_claim(staff_client, user):
    far = timezone.now().replace(microsecond=0) + dt.timedelta(days=30)
    task = queued_task(user, scheduled_at=far)
    assert UserQueue.objects.get(user=user).ready_at == far
    soon = timezone.now().replace(microsecond=0) + dt.timedelta(minutes=5)

    response = post_task(
        staff_client,
        task,
        scheduled_at_0=timezone.localtime(soon).strftime("%Y-%m-%d"),
        scheduled_at_1=timezone.localtime(soon).strftime("%H:%M:%S"),
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    assert Task.objects.get(pk=task.pk).scheduled_at == soon
    assert UserQueue.objects.get(user=user).ready_at == soon
    assert list(task.wait_metrics.values_list("queue_entry_time", flat=True)) == [soon]


def test_content_cannot_change_once_the_task_is_sending(staff_client, user):
    task = queued_task(user)
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SENDING)
    task.refresh_from_db()
    before = row(task)

    response = post_task(staff_client, task, subject="Other subject")

    assert form_errors(response) == {"subject": ["a sending task's content cannot change: pause it first"]}
    assert row(task) == before


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"timeout": "0"}, {"timeout": ["Ensure this value is greater than or equal to 0.1."]}),
        ({"sending_rate": "-1"}, {"sending_rate": ["Ensure this value is greater than or equal to 0."]}),
        ({"daily_quota": "-5"}, {"daily_quota": ["Ensure this value is greater than or equal to 0."]}),
        ({"host": ""}, {"host": ["an SMTP service needs a host"]}),
        (
            {"transport": "backend", "backend_path": "not a path"},
            {"backend_path": ["must be a dotted path, e.g. anymail.backends.mailgun.EmailBackend"]},
        ),
        ({"port": "70000"}, {"port": ["Ensure this value is less than or equal to 65535."]}),
    ],
    ids=["timeout", "rate", "quota", "host", "backend-path", "port"],
)
def test_service_edits_are_checked_like_the_api(staff_client, email_service_factory, fields, errors):
    from tests.test_admin import service_change_form

    service = email_service_factory(host="smtp.example.com")
    before = EmailService.objects.values().get(pk=service.pk)

    response = staff_client.post(
        reverse("admin:queues_emailservice_change", args=[service.pk]), service_change_form(service, **fields)
    )

    assert form_errors(response) == errors
    assert EmailService.objects.values().get(pk=service.pk) == before


def test_a_new_service_is_checked_like_the_api_and_saved_when_valid(staff_client):
    url = reverse("admin:queues_emailservice_add")
    form = {
        "name": "relay",
        "from_email": "news@relay.example",
        "is_enabled": "on",
        "transport": "smtp",
        "host": "",
        "port": "587",
        "security": "starttls",
        "timeout": "10",
        "username": "",
        "password": "pw",
        "backend_path": "",
        "backend_options": "",
        "sending_rate": "",
        "max_connections": "20",
        "daily_quota": "100",
    }

    assert form_errors(staff_client.post(url, form)) == {"host": ["an SMTP service needs a host"]}
    assert EmailService.objects.count() == 0

    response = staff_client.post(url, {**form, "host": "smtp.relay.example"})
    assert response.status_code == 302, response.content.decode()[:2000]
    service = EmailService.objects.get()
    assert (service.name, service.host, service.password, service.is_enabled) == (
        "relay",
        "smtp.relay.example",
        "pw",
        True,
    )


def test_enabling_in_the_service_form_clears_the_backoff_as_the_action_does(staff_client, email_service_factory):
    from tests.test_admin import service_change_form

    later = timezone.now() + dt.timedelta(minutes=10)
    service = email_service_factory(host="smtp.example.com", is_enabled=False, backoff_level=2, backoff_until=later)

    response = staff_client.post(
        reverse("admin:queues_emailservice_change", args=[service.pk]), service_change_form(service, is_enabled="on")
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    service.refresh_from_db()
    assert (service.is_enabled, service.backoff_level, service.backoff_until) == (True, 0, None)
