"""A service's backend_path must be on EDM_ALLOWED_BACKENDS: in the API, the admin and the scheduler."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.urls import reverse

from queues.backend_allowlist import backend_allowed
from queues.models import EmailService, SubTask
from queues.services import task_create
from tests.api_helpers import client_for
from tests.test_admin import service_change_form

FILE_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
MAILGUN = "anymail.backends.mailgun.EmailBackend"
REFUSAL = (
    f"{FILE_BACKEND} is not an allowed e-mail backend (EDM_ALLOWED_BACKENDS: django.core.mail.backends.smtp."
    "EmailBackend, anymail.backends.*, django.core.mail.backends.locmem.EmailBackend)"
)
URL = "/api/services/"
NEW = {"name": "esp", "transport": "backend", "from_email": "news@example.org", "host": ""}
# A PUT replaces the service: every writable field (but the write-only secrets) is given.
REPLACEMENT = {
    **NEW,
    "port": 587,
    "username": "",
    "security": "none",
    "timeout": 10.0,
    "daily_quota": 1000,
    "sending_rate": 0.0,
    "max_connections": 20,
}


@pytest.fixture
def staff(user_factory):
    return client_for(user_factory(is_staff=True))


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        pytest.param("django.core.mail.backends.smtp.EmailBackend", True, id="listed"),
        pytest.param(MAILGUN, True, id="under-wildcard"),
        pytest.param("anymail.backends.amazon_ses.EmailBackend", True, id="under-wildcard-2"),
        pytest.param("anymail.backendsevil.EmailBackend", False, id="wildcard-is-a-package-not-a-prefix"),
        pytest.param("anymail.EmailBackend", False, id="above-wildcard"),
        pytest.param(FILE_BACKEND, False, id="not-listed"),
        pytest.param("django.core.mail.backends.smtp.EmailBackendX", False, id="longer-name"),
    ],
)
def test_allowed_paths(path, allowed):
    assert backend_allowed(path) is allowed


@pytest.mark.django_db
def test_the_production_default_does_not_allow_in_memory_or_console_backends(settings):
    settings.EDM_ALLOWED_BACKENDS = ["django.core.mail.backends.smtp.EmailBackend", "anymail.backends.*"]
    assert not backend_allowed("django.core.mail.backends.locmem.EmailBackend")
    assert not backend_allowed("django.core.mail.backends.console.EmailBackend")


@pytest.mark.django_db
def test_an_allowed_backend_is_accepted(staff):
    response = staff.post(URL, {**NEW, "backend_path": MAILGUN, "backend_options": {"api_key": "k"}}, format="json")

    assert response.status_code == 201, response.content
    assert EmailService.objects.get().backend_path == MAILGUN


@pytest.mark.django_db
def test_creating_with_a_backend_not_allowed_is_a_400_and_creates_nothing(staff):
    response = staff.post(URL, {**NEW, "backend_path": FILE_BACKEND}, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": f"backend_path: {REFUSAL}", "errors": {"backend_path": [REFUSAL]}}
    assert EmailService.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch"])
def test_updating_to_a_backend_not_allowed_is_a_400_and_changes_nothing(staff, email_service_factory, method):
    service = email_service_factory(name="esp", transport="backend", backend_path=MAILGUN, host="")
    before = EmailService.objects.values().get(pk=service.pk)
    payload = {"backend_path": FILE_BACKEND} if method == "patch" else {**REPLACEMENT, "backend_path": FILE_BACKEND}

    response = getattr(staff, method)(f"{URL}{service.pk}/", payload, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {"backend_path": [REFUSAL]}
    assert EmailService.objects.values().get(pk=service.pk) == before


@pytest.mark.django_db
def test_the_admin_shows_a_form_error_and_changes_nothing(client, user_factory, email_service_factory):
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    service = email_service_factory(host="smtp.example.com")
    before = EmailService.objects.values().get(pk=service.pk)
    url = reverse("admin:queues_emailservice_change", args=[service.pk])

    response = client.post(url, service_change_form(service, transport="backend", backend_path=FILE_BACKEND))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert {field: [str(e) for e in messages] for field, messages in errors.items()} == {"backend_path": [REFUSAL]}
    assert EmailService.objects.values().get(pk=service.pk) == before

    response = client.post(url, service_change_form(service, transport="backend", backend_path=MAILGUN))
    assert response.status_code == 302
    assert EmailService.objects.get(pk=service.pk).backend_path == MAILGUN


@pytest.mark.django_db(transaction=True)
def test_the_scheduler_refuses_a_stored_backend_no_longer_allowed(email_service_factory, user, queue_config, tmp_path):
    # Stored before the list was narrowed (or written around the validation): never imported, never run.
    queue_config(max_retries=0)
    service = email_service_factory(
        transport="backend", host="", backend_path=FILE_BACKEND, backend_options={"file_path": str(tmp_path)}
    )
    task = task_create(owner=user, name="t", subject="s", body_text="b", recipients=["ann@example.org"])

    call_command("run_scheduler", "--once")

    subtask = SubTask.objects.get(task=task)
    assert subtask.status == SubTask.Status.FAILED
    assert subtask.error_message == (
        f"the backend {FILE_BACKEND} is not allowed (EDM_ALLOWED_BACKENDS: django.core.mail.backends.smtp."
        "EmailBackend, anymail.backends.*, django.core.mail.backends.locmem.EmailBackend)"
    )
    assert list(tmp_path.iterdir()) == []  # the file backend never wrote the mail
    service.refresh_from_db()
    assert (service.total_sent, service.consecutive_failures) == (0, 1)
