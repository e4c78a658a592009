"""Service passwords and backend options are stored as Fernet tokens, and keys can be rotated."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from queues.models import EmailService, SubTask
from queues.services import task_create
from tests.api_helpers import client_for
from tests.processes import child_environment
from tests.schedulers import ROOT

PASSWORD = "pw-Plain-0123456789"
API_KEY = "key-Plain-9876543210"
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def raw_columns(name: str) -> tuple[str, str]:
    """The password and backend_options columns as the database holds them (no model field involved)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT password, backend_options FROM email_services WHERE name = %s", [name])
        password, options = cursor.fetchone()
    # backend_options is a JSON column holding the token as a JSON string.
    return password, json.loads(options) if isinstance(options, str) else options


def decrypt(token: str, key: str) -> str:
    return Fernet(key).decrypt(token.encode()).decode()


@pytest.fixture
def staff(user_factory):
    return client_for(user_factory(is_staff=True))


def create_over_the_api(staff, name: str = "relay") -> dict:
    response = staff.post(
        "/api/services/",
        {
            "name": name,
            "host": "smtp.example.org",
            "username": "mailer",
            "password": PASSWORD,
            "backend_options": {"api_key": API_KEY},
            "from_email": "news@example.org",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


@pytest.mark.django_db
def test_the_columns_hold_only_tokens_that_the_key_decrypts(staff, settings, caplog):
    caplog.set_level(logging.DEBUG)
    body = create_over_the_api(staff)

    password, options = raw_columns("relay")
    assert PASSWORD not in password
    assert API_KEY not in options
    (key,) = settings.EDM_FIELD_KEYS
    assert decrypt(password, key) == PASSWORD
    assert json.loads(decrypt(options, key)) == {"api_key": API_KEY}
    # Reading through the model gives the plaintext back.
    service = EmailService.objects.get(pk=body["id"])
    assert (service.password, service.backend_options) == (PASSWORD, {"api_key": API_KEY})
    # Neither the secrets nor their tokens leave through the API or the logs.
    listed = staff.get("/api/services/").content.decode() + staff.get(f"/api/services/{body['id']}/").content.decode()
    for secret in (PASSWORD, API_KEY, password, options):
        assert secret not in listed
        assert secret not in caplog.text


@pytest.mark.django_db
def test_an_empty_password_stays_empty_and_an_edit_encrypts_the_new_one(staff, settings):
    body = create_over_the_api(staff)
    assert staff.patch(f"/api/services/{body['id']}/", {"password": ""}, format="json").status_code == 200
    assert raw_columns("relay")[0] == ""

    assert staff.patch(f"/api/services/{body['id']}/", {"password": "other-pw"}, format="json").status_code == 200
    password, _ = raw_columns("relay")
    assert "other-pw" not in password
    assert decrypt(password, settings.EDM_FIELD_KEYS[0]) == "other-pw"


@pytest.mark.django_db
def test_rotation_moves_every_row_to_the_new_key_so_the_old_one_can_go(email_service_factory, settings):
    settings.EDM_FIELD_KEYS = [OLD_KEY]
    email_service_factory(name="a", password=PASSWORD, backend_options={"api_key": API_KEY})
    email_service_factory(name="b", password="", backend_options={})
    old_a = raw_columns("a")

    settings.EDM_FIELD_KEYS = [NEW_KEY, OLD_KEY]  # step 1: the new key first, the old one still decrypts
    assert EmailService.objects.get(name="a").password == PASSWORD
    out = io.StringIO()
    call_command("rotate_field_keys", stdout=out)
    assert out.getvalue() == (
        "Re-encrypted the credentials of 2 of 2 services with the first key of EDM_FIELD_KEYS; 0 already used it.\n"
    )
    password, options = raw_columns("a")
    assert (decrypt(password, NEW_KEY), json.loads(decrypt(options, NEW_KEY))) == (PASSWORD, {"api_key": API_KEY})
    with pytest.raises(InvalidToken):
        decrypt(password, OLD_KEY)
    assert old_a != (password, options)

    out = io.StringIO()
    call_command("rotate_field_keys", stdout=out)  # a second run has nothing left to do
    assert out.getvalue().startswith("Re-encrypted the credentials of 0 of 2 services")
    assert raw_columns("a") == (password, options)

    settings.EDM_FIELD_KEYS = [NEW_KEY]  # step 3: the old key is gone
    service = EmailService.objects.get(name="a")
    assert (service.password, service.backend_options) == (PASSWORD, {"api_key": API_KEY})
    assert EmailService.objects.get(name="b").password == ""


@pytest.mark.django_db
def test_rotation_without_the_key_a_row_was_written_with_changes_nothing(email_service_factory, settings):
    settings.EDM_FIELD_KEYS = [OLD_KEY]
    service = email_service_factory(name="a", password=PASSWORD)
    settings.EDM_FIELD_KEYS = [NEW_KEY, Fernet.generate_key().decode()]  # the old key dropped too early
    email_service_factory(name="b", password="pw-b")
    before = {name: raw_columns(name) for name in ("a", "b")}

    with pytest.raises(CommandError) as error:
        call_command("rotate_field_keys", stdout=io.StringIO())

    assert str(error.value) == (
        f"the password of service {service.pk} cannot be decrypted with any key in EDM_FIELD_KEYS: put back the "
        "key it was written with (after the new one) and run rotate_field_keys again; nothing was changed"
    )
    assert {name: raw_columns(name) for name in ("a", "b")} == before


@pytest.mark.django_db(transaction=True)
def test_the_command_with_a_wrong_key_exits_1_with_one_line(email_service_factory, settings):
    settings.EDM_FIELD_KEYS = [OLD_KEY]
    email_service_factory(name="a", password=PASSWORD)
    env = {**child_environment(), "EDM_FIELD_KEYS": NEW_KEY}

    done = subprocess.run(
        [sys.executable, "manage.py", "rotate_field_keys"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("CommandError: the password of service ")
    assert "cannot be decrypted with any key in EDM_FIELD_KEYS" in line
    assert PASSWORD not in done.stderr + done.stdout


@pytest.mark.django_db
def test_the_api_answers_a_clear_503_when_the_keys_cannot_decrypt(staff, email_service_factory, settings):
    settings.EDM_FIELD_KEYS = [OLD_KEY]
    email_service_factory(name="a", password=PASSWORD)
    settings.EDM_FIELD_KEYS = [NEW_KEY]

    response = staff.get("/api/services/")

    assert response.status_code == 503
    assert response.json() == {
        "detail": "email_services.password cannot be decrypted with any key in EDM_FIELD_KEYS "
        "(was the key it was written with removed before rotate_field_keys ran?)"
    }


@pytest.mark.django_db(transaction=True)
def test_a_service_the_keys_cannot_decrypt_fails_its_sends_with_the_reason(
    smtp_sink, email_service_factory, user, queue_config, settings
):
    queue_config(max_retries=0)
    settings.EDM_FIELD_KEYS = [OLD_KEY]
    service = email_service_factory(port=smtp_sink.port, username="mailer", password=PASSWORD)
    settings.EDM_FIELD_KEYS = [NEW_KEY]  # the old key dropped before rotate_field_keys ran
    task = task_create(owner=user, name="t", subject="s", body_text="b", recipients=["ann@example.org"])

    call_command("run_scheduler", "--once")

    subtask = SubTask.objects.get(task=task)
    assert subtask.status == SubTask.Status.FAILED
    assert subtask.error_message == (
        "the service's credentials are unusable: email_services.password cannot be decrypted with any key in "
        "EDM_FIELD_KEYS (was the key it was written with removed before rotate_field_keys ran?)"
    )
    assert smtp_sink.snapshot() == []
    assert EmailService.objects.filter(pk=service.pk).values_list("consecutive_failures", flat=True).get() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "page", ["admin:queues_emailservice_changelist", "admin:queues_emailservice_change", "admin:dashboard"]
)
def test_the_admin_and_dashboard_answer_a_clear_503_when_the_keys_cannot_decrypt(
    client, user_factory, email_service_factory, settings, page
):
    settings.EDM_FIELD_KEYS = [OLD_KEY]
    service = email_service_factory(password="pw-never-shown")
    settings.EDM_FIELD_KEYS = [NEW_KEY]  # the old key dropped before rotate_field_keys ran
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    url = reverse(page, args=[service.pk]) if page.endswith("_change") else reverse(page)

    response = client.get(url)

    assert response.status_code == 503
    body = response.content.decode()
    assert "cannot be decrypted with any key in EDM_FIELD_KEYS" in body
    assert "pw-never-shown" not in body
