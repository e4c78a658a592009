from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from queues.models import EmailService
from tests.factories import AlertFactory, SendAttemptFactory, WorkerHeartbeatFactory


@pytest.fixture
def monitoring_rows(db):
    """One alert, heartbeat and send attempt, so their admin pages have a row to show."""
    return AlertFactory(), WorkerHeartbeatFactory(), SendAttemptFactory()


@pytest.fixture
def admin_client_logged_in(client, user_factory):
    admin = user_factory(username="root", is_staff=True, is_superuser=True)
    client.force_login(admin)
    return client


@pytest.mark.parametrize(
    "model",
    [
        "accounts.user",
        "contacts.contact",
        "contacts.tag",
        "queues.emailservice",
        "queues.task",
        "queues.subtask",
        "queues.taskwaitmetric",
        "monitoring.alert",
        "queues.workerheartbeat",
        "queues.sendattempt",
        "config.configitem",
    ],
)
def test_every_model_has_a_working_admin_list_and_detail(
    admin_client_logged_in, model, subtask, task_wait_metric, contact, tag, config_item, email_service, monitoring_rows
):
    app_label, model_name = model.split(".")
    changelist = admin_client_logged_in.get(reverse(f"admin:{app_label}_{model_name}_changelist"), {"q": "a"})
    assert changelist.status_code == 200

    from django.apps import apps

    obj = apps.get_model(app_label, model_name).objects.first()
    change = admin_client_logged_in.get(reverse(f"admin:{app_label}_{model_name}_change", args=[obj.pk]))
    assert change.status_code == 200


def service_change_form(service, **fields: str) -> dict[str, str]:
    """The admin change form of an SMTP service as posted, secrets left empty (kept as stored)."""
    return {
        "name": service.name,
        "from_email": service.from_email,
        "is_enabled": "on",
        "transport": "smtp",
        "host": service.host,
        "port": str(service.port),
        "security": service.security,
        "timeout": str(service.timeout),
        "username": "",
        "password": "",
        "backend_path": "",
        "backend_options": "",
        "sending_rate": "",
        "max_connections": str(service.max_connections),
        "daily_quota": "100",
        **fields,
    }


def test_service_secrets_are_write_only_in_the_admin(admin_client_logged_in, email_service_factory):
    service = email_service_factory(password="s3cr3t-pw", backend_options={"api_key": "k3y-123"})
    url = reverse("admin:queues_emailservice_change", args=[service.pk])

    page = admin_client_logged_in.get(url).content.decode()
    assert "s3cr3t-pw" not in page
    assert "k3y-123" not in page

    form = service_change_form(
        service,
        host="smtp.example.com",
        port="2525",
        security="none",
        timeout="5",
        sending_rate="1.5",
        used_quota="0",
        quota_date="",
    )
    response = admin_client_logged_in.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    service.refresh_from_db()
    assert (service.host, service.sending_rate, service.daily_quota) == ("smtp.example.com", 1.5, 100)
    assert service.password == "s3cr3t-pw"  # empty field keeps the stored secret
    assert service.backend_options == {"api_key": "k3y-123"}

    admin_client_logged_in.post(url, {**form, "password": "new-pw"})
    assert EmailService.objects.get(pk=service.pk).password == "new-pw"


def test_saving_a_service_keeps_what_the_scheduler_wrote_meanwhile(
    admin_client_logged_in, email_service_factory, monkeypatch
):
    from queues.admin import EmailServiceForm

    service = email_service_factory(sending_rate=2.0, daily_quota=100)
    url = reverse("admin:queues_emailservice_change", args=[service.pk])
    later = timezone.now() + dt.timedelta(seconds=30)
    clean = EmailServiceForm.clean

    def scheduler_writes_during_the_request(form):
        # After the admin read the row, before it saves: a claim and a recorded send.
        EmailService.objects.filter(pk=service.pk).update(
            used_quota=42, total_sent=40, next_available_at=later, quota_date=later.date()
        )
        return clean(form)

    monkeypatch.setattr(EmailServiceForm, "clean", scheduler_writes_during_the_request)
    form = service_change_form(service, sending_rate="3.0")
    response = admin_client_logged_in.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    service.refresh_from_db()
    assert service.sending_rate == 3.0
    assert (service.used_quota, service.total_sent, service.next_available_at) == (42, 40, later)


@pytest.mark.parametrize("model", ["queues.workerheartbeat", "queues.sendattempt", "monitoring.alert"])
def test_system_written_rows_cannot_be_added_changed_or_deleted(admin_client_logged_in, model, monitoring_rows):
    from django.apps import apps

    app_label, model_name = model.split(".")
    model_class = apps.get_model(app_label, model_name)
    obj = model_class.objects.get()
    before = model_class.objects.values().get()

    assert admin_client_logged_in.get(reverse(f"admin:{app_label}_{model_name}_add")).status_code == 403
    assert (
        admin_client_logged_in.get(reverse(f"admin:{app_label}_{model_name}_delete", args=[obj.pk])).status_code == 403
    )
    change = admin_client_logged_in.get(reverse(f"admin:{app_label}_{model_name}_change", args=[obj.pk]))
    assert 'name="_save"' not in change.content.decode()
    admin_client_logged_in.post(reverse(f"admin:{app_label}_{model_name}_change", args=[obj.pk]), {"pid": "1"})
    assert model_class.objects.values().get() == before


def test_service_list_never_shows_the_password(admin_client_logged_in, email_service_factory):
    email_service_factory(password="s3cr3t-pw", name="relay-1")

    page = admin_client_logged_in.get(reverse("admin:queues_emailservice_changelist")).content.decode()

    assert "relay-1" in page
    assert "s3cr3t-pw" not in page


def test_tasks_are_not_added_nor_their_status_set_by_hand(admin_client_logged_in, task_factory, monkeypatch):
    from django.contrib.admin.sites import site

    from queues.models import Task

    task = task_factory(status=Task.Status.PENDING, name="spring")
    assert admin_client_logged_in.get(reverse("admin:queues_task_add")).status_code == 403
    url = reverse("admin:queues_task_change", args=[task.pk])
    form_class = site._registry[Task].get_form(None, task)
    assert "status" not in form_class.base_fields
    clean = form_class.clean

    def scheduler_starts_sending(form):
        Task.objects.filter(pk=task.pk).update(status=Task.Status.SENDING)
        return clean(form)

    monkeypatch.setattr(form_class, "clean", scheduler_starts_sending)
    monkeypatch.setattr(site._registry[Task], "get_form", lambda *args, **kwargs: form_class)
    data = {f: getattr(task, f) for f in ("subject", "body_text", "body_html", "from_name", "reply_to", "priority")}
    response = admin_client_logged_in.post(url, {**data, "name": "summer", "body_html": data["body_html"] or ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    task.refresh_from_db()
    assert (task.name, task.status) == ("summer", Task.Status.SENDING)


def test_subtasks_are_read_only_in_the_admin(admin_client_logged_in, subtask_factory):
    subtask = subtask_factory()
    assert admin_client_logged_in.get(reverse("admin:queues_subtask_add")).status_code == 403
    page = admin_client_logged_in.get(reverse("admin:queues_subtask_change", args=[subtask.pk])).content.decode()
    assert 'name="_save"' not in page


def test_contacts_deleted_in_the_admin_leave_their_tags_and_their_subtasks(
    admin_client_logged_in, contact_factory, tag_factory, subtask_factory
):
    from contacts.models import Contact, Tag
    from contacts.tag_manager import ContactTagManager
    from queues.models import SubTask

    one, two, kept = contact_factory.create_batch(3)
    tag = tag_factory(owner=one.owner)
    Contact.objects.filter(pk__in=[two.pk, kept.pk]).update(owner=one.owner)
    ContactTagManager().add_contacts_to_tag(tag.pk, [one.pk, two.pk, kept.pk])
    linked = subtask_factory(contact=one)

    page = admin_client_logged_in.post(reverse("admin:contacts_contact_delete", args=[one.pk]), {"post": "yes"})
    action = admin_client_logged_in.post(
        reverse("admin:contacts_contact_changelist"),
        {"action": "delete_selected", "_selected_action": [str(two.pk)], "post": "yes"},
    )

    assert (page.status_code, action.status_code) == (302, 302)
    assert list(Contact.objects.all()) == [kept]
    assert Tag.objects.get(pk=tag.pk).contacts == [str(kept.pk)]
    assert SubTask.objects.get(pk=linked.pk).contact_id is None
