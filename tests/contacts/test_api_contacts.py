from __future__ import annotations

import uuid

import pytest

from contacts.models import Contact, Tag
from contacts.tag_manager import ContactTagManager
from tests.api_helpers import client_for

URL = "/api/contacts/"


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"k": value}
    return value


def test_create_normalises_the_address(user):
    response = client_for(user).post(
        URL, {"email": " Alice@Example.COM ", "first_name": "Alice", "attributes": {"company": "ACME"}}, format="json"
    )

    assert response.status_code == 201
    contact = Contact.objects.get()
    assert response.json() == {
        "id": str(contact.pk),
        "email": "Alice@example.com",
        "first_name": "Alice",
        "last_name": "",
        "attributes": {"company": "ACME"},
        "created_at": contact.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": contact.updated_at.isoformat().replace("+00:00", "Z"),
    }
    assert contact.owner == user


def test_create_refuses_an_address_already_in_the_book(contact):
    response = client_for(contact.owner).post(URL, {"email": contact.email}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "email: you already have a contact with this address",
        "errors": {"email": ["you already have a contact with this address"]},
    }
    assert Contact.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        pytest.param(
            {"email": "not-an-address"}, {"email": ["'not-an-address' is not a valid e-mail address"]}, id="bad"
        ),
        pytest.param(
            {"email": "a" * 400 + "@x.org"},
            {"email": ["Ensure this field has no more than 320 characters."]},
            id="long",
        ),
        pytest.param({"email": "a" * 249 + "@x.org"}, {"email": ["at most 254 characters"]}, id="over-254"),
        pytest.param({}, {"email": ["This field is required."]}, id="missing"),
        pytest.param({"email": None}, {"email": ["This field may not be null."]}, id="null"),
        pytest.param({"email": ["a@b.org"]}, {"email": ["Not a valid string."]}, id="list"),
        pytest.param(
            {"email": "a@b.org", "attributes": ["x"]},
            {"attributes": ['Expected a dictionary of items but got type "list".']},
            id="attributes-list",
        ),
        pytest.param(
            {"email": "a@b.org", "attributes": {"k": "a\u0000b"}},
            {"attributes": ["must not contain NUL characters"]},
            id="attributes-nul",
        ),
        pytest.param({"email": "a@b.org", "first_name": "x" * 101}, None, id="long-name"),
        pytest.param(
            {"email": "a@b.org", "attributes": _nested(500)},
            {"attributes": ["must not be nested more than 20 levels deep"]},
            id="attributes-deep",
        ),
    ],
)
def test_create_rejects_bad_input_and_writes_nothing(user, body, errors):
    response = client_for(user).post(URL, body, format="json")

    assert response.status_code == 400
    if errors is not None:
        assert response.json()["errors"] == errors
    assert response.json()["detail"]
    assert Contact.objects.count() == 0


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        pytest.param("{not json", "application/json", 400, id="malformed-json"),
        pytest.param("[" * 100_000, "application/json", 400, id="deeply-nested"),
        pytest.param("null", "application/json", 400, id="null-body"),
        pytest.param("[]", "application/json", 400, id="list-body"),
        pytest.param("", "application/json", 400, id="empty-body"),
        pytest.param("email=a@b.org", "application/x-www-form-urlencoded", 415, id="form"),
        pytest.param("email", "text/plain", 415, id="text"),
    ],
)
def test_create_with_unusable_bodies_is_a_client_error(user, content, content_type, status):
    response = client_for(user).generic("POST", URL, content, content_type=content_type)

    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)
    assert Contact.objects.count() == 0


def test_oversized_json_body_is_refused(user, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = client_for(user).post(URL, {"email": "a@b.org", "first_name": "x" * 2000}, format="json")

    assert response.status_code == 413
    assert response.json() == {"detail": "request body too large"}
    assert Contact.objects.count() == 0


def test_list_is_paginated_and_ordered_by_email(user, contact_factory):
    for email in ("c@x.org", "a@x.org", "b@x.org"):
        contact_factory(owner=user, email=email)
    contact_factory(email="someone-else@x.org")

    first = client_for(user).get(URL, {"page_size": 2}).json()
    second = client_for(user).get(URL, {"page_size": 2, "page": 2}).json()

    assert first["count"] == 3
    assert [c["email"] for c in first["results"]] == ["a@x.org", "b@x.org"]
    assert first["next"] is not None
    assert [c["email"] for c in second["results"]] == ["c@x.org"]
    assert second["next"] is None


def test_list_ordering(user, contact_factory):
    for email in ("a@x.org", "b@x.org"):
        contact_factory(owner=user, email=email)

    response = client_for(user).get(URL, {"ordering": "-email"})

    assert [c["email"] for c in response.json()["results"]] == ["b@x.org", "a@x.org"]


def test_filter_by_email(user, contact_factory):
    contact_factory(owner=user, email="alice@acme.org")
    contact_factory(owner=user, email="bob@other.org")

    response = client_for(user).get(URL, {"email": "ACME"})

    assert [c["email"] for c in response.json()["results"]] == ["alice@acme.org"]


def test_filter_by_tag(user, contact_factory, tag_factory):
    tag = tag_factory(owner=user)
    member, _outsider = contact_factory(owner=user, email="in@x.org"), contact_factory(owner=user, email="out@x.org")
    ContactTagManager().add_contact_to_tag(tag.pk, member.pk)

    response = client_for(user).get(URL, {"tag": str(tag.pk)})

    assert response.status_code == 200
    assert [c["email"] for c in response.json()["results"]] == ["in@x.org"]


NOT_A_CHOICE = "Select a valid choice. That choice is not one of the available choices."


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("not-a-uuid", "\u201cnot-a-uuid\u201d is not a valid UUID.", id="malformed"),
        pytest.param("other-user", NOT_A_CHOICE, id="other-users-tag"),
        pytest.param(str(uuid.UUID(int=0)), NOT_A_CHOICE, id="unknown"),
    ],
)
def test_filter_by_a_tag_that_is_not_yours_is_a_400(user, tag_factory, value, message):
    if value == "other-user":
        value = str(tag_factory().pk)

    response = client_for(user).get(URL, {"tag": value})

    assert response.status_code == 400
    assert response.json() == {"detail": f"tag: {message}", "errors": {"tag": [message]}}


def test_retrieve_update_and_delete(contact):
    api = client_for(contact.owner)
    url = f"{URL}{contact.pk}/"

    assert api.get(url).json()["email"] == contact.email
    patched = api.patch(url, {"first_name": "Zoe", "email": "zoe@EXAMPLE.org"}, format="json")
    assert patched.status_code == 200
    assert (patched.json()["first_name"], patched.json()["email"]) == ("Zoe", "zoe@example.org")
    partial_put = api.put(url, {"email": "zed@example.org", "last_name": "Zed"}, format="json")
    assert partial_put.status_code == 400
    assert partial_put.json()["errors"] == {
        "first_name": ["This field is required."],
        "attributes": ["This field is required."],
    }
    full = {"email": "zed@example.org", "first_name": "", "last_name": "Zed", "attributes": {}}
    put = api.put(url, full, format="json")
    assert put.status_code == 200
    contact.refresh_from_db()
    assert (contact.email, contact.first_name, contact.last_name) == ("zed@example.org", "", "Zed")

    assert api.delete(url).status_code == 204
    assert Contact.objects.count() == 0


def test_update_to_an_address_already_in_the_book_changes_nothing(user, contact_factory):
    first, second = contact_factory(owner=user, email="a@x.org"), contact_factory(owner=user, email="b@x.org")

    response = client_for(user).patch(f"{URL}{second.pk}/", {"email": "a@x.org"}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {"email": ["you already have a contact with this address"]}
    second.refresh_from_db()
    assert second.email == "b@x.org"
    assert first.email == "a@x.org"


def test_deleting_a_contact_takes_it_out_of_its_tags(user, contact_factory, tag_factory):
    keep, drop = contact_factory(owner=user), contact_factory(owner=user)
    tag = tag_factory(owner=user)
    ContactTagManager().add_contacts_to_tag(tag.pk, [keep.pk, drop.pk])

    assert client_for(user).delete(f"{URL}{drop.pk}/").status_code == 204

    tag.refresh_from_db()
    assert tag.contacts == [str(keep.pk)]


def test_another_users_contact_is_a_404_and_stays_unchanged(user, contact):
    api = client_for(user)
    url = f"{URL}{contact.pk}/"

    for response in (api.get(url), api.patch(url, {"first_name": "X"}, format="json"), api.delete(url)):
        assert response.status_code == 404
        assert response.json() == {"detail": "No Contact matches the given query."}
    fresh = Contact.objects.get(pk=contact.pk)
    assert (fresh.first_name, fresh.email) == (contact.first_name, contact.email)


@pytest.mark.parametrize("pk", ["not-a-uuid", "1", "00000000-0000-0000-0000-000000000000", "%00"])
def test_unknown_or_malformed_ids_are_a_404(user, pk):
    response = client_for(user).get(f"{URL}{pk}/")

    assert response.status_code == 404
    assert "detail" in response.json()


def test_staff_see_only_their_own_contacts(user_factory, contact):
    staff = user_factory(is_staff=True)

    assert client_for(staff).get(f"{URL}{contact.pk}/").status_code == 404
    assert client_for(staff).get(URL).json()["count"] == 0


def test_anonymous_is_refused(db):
    from rest_framework.test import APIClient

    response = APIClient().get(URL)

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_tags_stay_untouched_by_contact_crud(user, contact_factory, tag_factory):
    tag = tag_factory(owner=user)
    client_for(user).post(URL, {"email": "new@x.org"}, format="json")

    assert Tag.objects.get(pk=tag.pk).contacts == []
