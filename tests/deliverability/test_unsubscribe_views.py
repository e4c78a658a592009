"""The unsubscribe page: a POST (one click, no session, no CSRF token) suppresses; a GET only asks."""

from __future__ import annotations

import pytest
from django.core.signing import Signer, TimestampSigner
from django.test import Client
from django.urls import resolve

from deliverability.models import Suppression
from deliverability.unsubscribe import PATH, SALT, unsubscribe_token
from deliverability.views import unsubscribe_view

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def token(task) -> str:
    return unsubscribe_token(owner_id=task.owner_id, task_id=task.pk, email="Ann@Example.org")


def page(token: str) -> str:
    return f"/{PATH}{token}/"


def one_click(client: Client, token: str):
    """What a mailbox provider sends (RFC 8058): a form POST with the one-click field, nothing else."""
    return client.post(page(token), "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded")


def test_the_path_the_links_use_is_routed_to_the_page(token):
    assert resolve(page(token)).func is unsubscribe_view


def test_a_get_shows_a_button_that_posts_and_unsubscribes_nobody(client, token):
    response = client.get(page(token))

    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-state="confirm"' in body
    assert "Ann@Example.org" in body
    assert '<form method="post">' in body and '<button type="submit">' in body
    assert "<script" not in body and "http" not in body.split("<body>", 1)[1]  # nothing external, no JS
    assert response.cookies == {}  # no session, no CSRF cookie
    assert response["Cache-Control"].startswith("max-age=0")
    assert Suppression.objects.count() == 0


def test_a_head_unsubscribes_nobody(client, token):
    assert client.head(page(token)).status_code == 200
    assert Suppression.objects.count() == 0


def test_a_one_click_post_suppresses_the_address_for_the_owner_with_the_task(client, token, task):
    response = one_click(client, token)

    assert response.status_code == 200
    assert 'data-state="done"' in response.content.decode()
    assert response.cookies == {}
    entry = Suppression.objects.get()
    assert (entry.owner_id, entry.email, entry.reason, entry.source, entry.task_id) == (
        task.owner_id,
        "ann@example.org",
        "unsubscribed",
        "unsubscribe",
        task.pk,
    )


def test_a_second_post_is_answered_the_same_and_changes_nothing(client, token):
    first = one_click(client, token)
    created_at = Suppression.objects.get().created_at

    again = client.post(page(token))

    assert (first.status_code, again.status_code) == (200, 200)
    assert 'data-state="already"' in again.content.decode()
    assert list(Suppression.objects.values_list("email", "created_at")) == [("ann@example.org", created_at)]


def test_an_address_already_suppressed_for_another_reason_keeps_that_entry(client, token, task):
    Suppression.objects.create(owner_id=task.owner_id, email="ann@example.org", reason="hard_bounce", source="smtp")
    assert one_click(client, token).status_code == 200
    assert list(Suppression.objects.values_list("reason", flat=True)) == ["hard_bounce"]


def _tampered(token: str, kind: str, task) -> str:
    payload, signature = token.rsplit(":", 1)
    swap = {"A": "B"}.get(payload[5], "A")
    return {
        "payload-changed": payload[:5] + swap + payload[6:] + ":" + signature,
        "signature-changed": payload + ":" + signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB"),
        "signature-cut": payload + ":" + signature[:20],
        "no-signature": payload,
        "other-salt": Signer(salt="some.other.purpose").sign(payload),
        "default-signer": Signer().sign(payload),
        "timestamp-signer": TimestampSigner(salt=SALT).sign(payload),
        "other-secret": Signer(key="not-this-sites-secret", salt=SALT).sign(payload),
        "not-base64": Signer(salt=SALT).sign("***not base64***"),
        "not-ascii": payload + ":" + "é" * 43,
        "too-long": Signer(salt=SALT).sign(payload * 10),
        "garbage": "x",
    }[kind]


TAMPERED = [
    "payload-changed",
    "signature-changed",
    "signature-cut",
    "no-signature",
    "other-salt",
    "default-signer",
    "timestamp-signer",
    "other-secret",
    "not-base64",
    "not-ascii",
    "too-long",
    "garbage",
]


@pytest.mark.parametrize("kind", TAMPERED)
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_tampered_malformed_or_foreign_token_is_refused_and_changes_nothing(client, token, task, kind, method):
    response = getattr(client, method)(page(_tampered(token, kind, task)))

    assert response.status_code == 400
    assert 'data-state="invalid"' in response.content.decode()
    assert Suppression.objects.count() == 0


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_token_of_a_deleted_owner_is_refused_and_changes_nothing(client, token, task, method):
    task.owner.delete()

    response = getattr(client, method)(page(token))

    assert response.status_code == 404
    assert 'data-state="gone"' in response.content.decode()
    assert Suppression.objects.count() == 0


def test_after_the_task_is_deleted_the_link_still_unsubscribes_without_naming_it(client, token, task):
    owner_id = task.owner_id
    task.delete()

    assert one_click(client, token).status_code == 200
    assert list(Suppression.objects.values_list("owner_id", "email", "task_id")) == [
        (owner_id, "ann@example.org", None)
    ]


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_other_methods_are_not_allowed(client, token, method):
    assert getattr(client, method)(page(token)).status_code == 405
    assert Suppression.objects.count() == 0
