from __future__ import annotations

import datetime as dt

import pytest
from rest_framework.test import APIClient

from queues.models import EmailService
from tests.api_helpers import client_for


def _deep(levels: int) -> list:
    value: list = [1]
    for _ in range(levels):
        value = [value]
    return value


URL = "/api/services/"
NEW = {
    "name": "relay-1",
    "host": "smtp.example.org",
    "port": 587,
    "username": "mailer",
    "password": "s3cret-pw",
    "from_email": "news@example.org",
    "daily_quota": 500,
    "sending_rate": 1.5,
}
# A PUT replaces the service: every writable field but the secrets.
REPLACEMENT = {
    **{key: value for key, value in NEW.items() if key != "password"},
    "transport": "smtp",
    "security": "starttls",
    "timeout": 10.0,
    "backend_path": "",
    "max_connections": 20,
}


@pytest.fixture
def staff(user_factory):
    return client_for(user_factory(is_staff=True))


def test_create_never_returns_the_secrets(staff):
    response = staff.post(URL, {**NEW, "backend_options": {"api_key": "k-123"}}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert "password" not in body
    assert "backend_options" not in body
    assert "s3cret-pw" not in response.content.decode()
    assert "k-123" not in response.content.decode()
    assert (body["name"], body["has_password"], body["is_enabled"], body["used_quota"]) == ("relay-1", True, True, 0)
    service = EmailService.objects.get()
    assert (service.password, service.backend_options, service.sending_rate) == ("s3cret-pw", {"api_key": "k-123"}, 1.5)


def test_update_keeps_secrets_write_only_and_saves_only_what_was_sent(staff, email_service_factory):
    service = email_service_factory(password="old-pw", used_quota=7)
    # The scheduler charges the service after the API loaded it: the update must not undo that.
    url = f"{URL}{service.pk}/"

    response = staff.patch(url, {"password": "new-pw", "daily_quota": 900}, format="json")

    assert response.status_code == 200
    assert "password" not in response.json()
    assert "new-pw" not in response.content.decode()
    service.refresh_from_db()
    assert (service.password, service.daily_quota, service.used_quota) == ("new-pw", 900, 7)
    put = staff.put(url, {**REPLACEMENT, "password": ""}, format="json")
    assert put.status_code == 200
    assert put.json()["has_password"] is False
    for listed in staff.get(URL).json()["results"]:
        assert "password" not in listed


def test_counters_and_is_enabled_are_not_writable_by_update(staff, email_service_factory):
    service = email_service_factory(used_quota=3)

    response = staff.patch(
        f"{URL}{service.pk}/", {"used_quota": 0, "total_sent": 99, "is_enabled": False}, format="json"
    )

    assert response.status_code == 400
    refused = "read-only field: it cannot be set by this request"
    assert response.json()["errors"] == {"used_quota": [refused], "total_sent": [refused], "is_enabled": [refused]}
    service.refresh_from_db()
    assert (service.used_quota, service.total_sent, service.is_enabled) == (3, 0, True)


def test_a_put_that_leaves_fields_out_is_refused_and_changes_nothing(staff, email_service_factory):
    service = email_service_factory(name="relay-9", port=2525, timeout=30.0, max_connections=5, daily_quota=70)
    before = EmailService.objects.filter(pk=service.pk).values().get()

    response = staff.put(f"{URL}{service.pk}/", {"name": "relay-9b", "from_email": "a@example.org"}, format="json")

    assert response.status_code == 400
    missing = {"transport", "host", "port", "username", "security", "timeout", "backend_path", "daily_quota"}
    missing |= {"sending_rate", "max_connections"}
    assert set(response.json()["errors"]) == missing
    assert all(messages == ["This field is required."] for messages in response.json()["errors"].values())
    assert EmailService.objects.filter(pk=service.pk).values().get() == before


def test_a_full_put_replaces_every_field_and_keeps_the_secrets(staff, email_service_factory):
    service = email_service_factory(password="keep-me", port=2525, timeout=30.0, max_connections=5)

    response = staff.put(f"{URL}{service.pk}/", REPLACEMENT, format="json")

    assert response.status_code == 200
    service.refresh_from_db()
    assert (service.name, service.port, service.timeout, service.max_connections) == ("relay-1", 587, 10.0, 20)
    assert service.password == "keep-me"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        pytest.param({"nmae": "x"}, {"nmae": ["unknown field"]}, id="unknown"),
        pytest.param({"port": "587"}, {"port": ["A valid integer is required."]}, id="number-as-string"),
        pytest.param({"host": 42}, {"host": ["Not a valid string."]}, id="string-as-number"),
        pytest.param({"daily_quota": True}, {"daily_quota": ["A valid integer is required."]}, id="boolean-as-number"),
    ],
)
def test_a_body_field_the_schema_does_not_allow_is_a_400_naming_it(staff, email_service_factory, body, errors):
    service = email_service_factory(name="relay-x", port=2525)

    response = staff.patch(f"{URL}{service.pk}/", body, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == errors
    service.refresh_from_db()
    assert (service.name, service.port, service.host) != ("x", 587, "42")


def test_a_service_can_be_created_disabled(staff):
    response = staff.post(URL, {**NEW, "is_enabled": False}, format="json")

    assert (response.status_code, response.json()["is_enabled"]) == (201, False)


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        pytest.param({"host": ""}, {"host": ["an SMTP service needs a host"]}, id="smtp-without-host"),
        pytest.param(
            {"transport": "backend"}, {"backend_path": ["a backend service needs a backend path"]}, id="backend"
        ),
        pytest.param(
            {"transport": "backend", "backend_path": "not a path"},
            {"backend_path": ["must be a dotted path, e.g. anymail.backends.mailgun.EmailBackend"]},
            id="backend-path",
        ),
        pytest.param({"port": 0}, {"port": ["Ensure this value is greater than or equal to 1."]}, id="port"),
        pytest.param({"port": 10**20}, {"port": ["Ensure this value is less than or equal to 65535."]}, id="huge-port"),
        pytest.param(
            {"daily_quota": -1}, {"daily_quota": ["Ensure this value is greater than or equal to 0."]}, id="quota"
        ),
        pytest.param(
            {"sending_rate": -0.5}, {"sending_rate": ["Ensure this value is greater than or equal to 0."]}, id="rate"
        ),
        pytest.param({"timeout": "fast"}, {"timeout": ["A valid number is required."]}, id="timeout-type"),
        pytest.param({"from_email": "nobody"}, {"from_email": ["Enter a valid email address."]}, id="from-email"),
        pytest.param({"transport": "pigeon"}, {"transport": ['"pigeon" is not a valid choice.']}, id="transport"),
        pytest.param(
            {"backend_options": ["x"]},
            {"backend_options": ['Expected a dictionary of items but got type "list".']},
            id="options-type",
        ),
        pytest.param(
            {"backend_options": {"k": "\u0000"}},
            {"backend_options": ["must not contain NUL characters"]},
            id="options-nul",
        ),
        pytest.param(
            {"backend_options": {"k": _deep(22)}},
            {"backend_options": ["must not be nested more than 20 levels deep"]},
            id="options-deep",
        ),
        pytest.param({"name": None}, {"name": ["This field may not be null."]}, id="null-name"),
    ],
)
def test_bad_input_is_a_400_and_writes_nothing(staff, fields, errors):
    response = staff.post(URL, {**NEW, **fields}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == errors
    assert EmailService.objects.count() == 0


def test_duplicate_name_is_a_400(staff, email_service_factory):
    email_service_factory(name="relay-1")

    response = staff.post(URL, NEW, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {"name": ["email service with this name already exists."]}
    assert EmailService.objects.count() == 1


def test_a_name_taken_between_the_check_and_the_insert_is_a_400(staff, email_service_factory, monkeypatch):
    from rest_framework.validators import UniqueValidator

    email_service_factory(name="relay-1")
    # Another request inserted the name after this one's uniqueness check.
    monkeypatch.setattr(UniqueValidator, "__call__", lambda self, value, field: None)

    response = staff.post(URL, NEW, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {"name": ["a service named 'relay-1' already exists"]}
    assert EmailService.objects.count() == 1


def test_actions(staff, email_service_factory):
    service = email_service_factory(
        is_enabled=False, used_quota=40, backoff_level=2, backoff_until=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    )
    base = f"{URL}{service.pk}/"

    enabled = staff.post(f"{base}enable/")
    assert (enabled.status_code, enabled.json()["is_enabled"], enabled.json()["backoff_level"]) == (200, True, 0)
    assert enabled.json()["backoff_until"] is None
    assert staff.post(f"{base}disable/").json()["is_enabled"] is False
    reset = staff.post(f"{base}reset-quota/")
    assert (reset.status_code, reset.json()["used_quota"]) == (200, 0)
    service.refresh_from_db()
    assert (service.is_enabled, service.used_quota) == (False, 0)


def test_delete(staff, email_service_factory, subtask_factory):
    unused, used = email_service_factory(), email_service_factory()
    subtask_factory(status="sent", service=used)

    assert staff.delete(f"{URL}{unused.pk}/").status_code == 204
    refused = staff.delete(f"{URL}{used.pk}/")
    assert (refused.status_code, refused.json()) == (
        409,
        {"detail": "the service has sent mail and its history is kept: disable it instead"},
    )
    assert list(EmailService.objects.values_list("pk", flat=True)) == [used.pk]


def test_filters_and_ordering(staff, email_service_factory):
    email_service_factory(name="b-smtp")
    email_service_factory(name="a-off", is_enabled=False)
    email_service_factory(name="c-esp", transport="backend", backend_path="x.Backend", host="")

    def names(**params) -> list[str]:
        return [s["name"] for s in staff.get(URL, params).json()["results"]]

    assert names() == ["a-off", "b-smtp", "c-esp"]
    assert names(is_enabled="false") == ["a-off"]
    assert names(is_enabled="true", transport="smtp") == ["b-smtp"]
    assert names(transport="backend") == ["c-esp"]
    assert names(ordering="-name") == ["c-esp", "b-smtp", "a-off"]
    assert staff.get(URL, {"transport": "fax"}).status_code == 400


def test_normal_users_get_403_everywhere(user, email_service):
    api = client_for(user)
    base = f"{URL}{email_service.pk}/"

    responses = [
        api.get(URL),
        api.post(URL, NEW, format="json"),
        api.get(base),
        api.patch(base, {"daily_quota": 1}, format="json"),
        api.delete(base),
        api.post(f"{base}disable/"),
        api.post(f"{base}reset-quota/"),
    ]

    assert [r.status_code for r in responses] == [403] * 7
    assert responses[0].json() == {"detail": "You do not have permission to perform this action."}
    email_service.refresh_from_db()
    assert (email_service.daily_quota, email_service.is_enabled) == (1000, True)
    assert EmailService.objects.count() == 1


def test_anonymous_gets_401(db):
    assert APIClient().get(URL).status_code == 401


@pytest.mark.parametrize("pk", ["not-a-uuid", "1"])
def test_malformed_ids_are_a_404(staff, pk):
    assert staff.get(f"{URL}{pk}/").status_code == 404
    assert staff.post(f"{URL}{pk}/enable/").status_code == 404
