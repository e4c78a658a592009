from __future__ import annotations

import uuid

import pytest

from contacts.models import Tag
from contacts.tag_manager import ContactTagManager
from tests.api_helpers import client_for

URL = "/api/tags/"


def _members(tag: Tag) -> list[str]:
    return Tag.objects.get(pk=tag.pk).contacts


def test_create_list_rename_delete(user, tag_factory):
    api = client_for(user)
    tag_factory(name="someone else's")

    created = api.post(URL, {"name": "  VIP  "}, format="json")
    assert created.status_code == 201
    tag = Tag.objects.get(owner=user)
    assert created.json() == {
        "id": str(tag.pk),
        "name": "VIP",
        "contact_count": 0,
        "created_at": tag.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": tag.updated_at.isoformat().replace("+00:00", "Z"),
    }
    assert [t["name"] for t in api.get(URL).json()["results"]] == ["VIP"]

    renamed = api.patch(f"{URL}{tag.pk}/", {"name": "Gold"}, format="json")
    assert (renamed.status_code, renamed.json()["name"]) == (200, "Gold")
    assert api.put(f"{URL}{tag.pk}/", {"name": "Platinum"}, format="json").json()["name"] == "Platinum"

    assert api.delete(f"{URL}{tag.pk}/").status_code == 204
    assert Tag.objects.filter(owner=user).count() == 0


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        pytest.param({"name": "Taken"}, {"name": ["you already have a tag with this name"]}, id="duplicate"),
        pytest.param({"name": "   "}, {"name": ["This field may not be blank."]}, id="blank"),
        pytest.param({"name": "x" * 101}, {"name": ["Ensure this field has no more than 100 characters."]}, id="long"),
        pytest.param({"name": None}, {"name": ["This field may not be null."]}, id="null"),
        pytest.param({"name": {"a": 1}}, {"name": ["Not a valid string."]}, id="object"),
        pytest.param({}, {"name": ["This field is required."]}, id="missing"),
    ],
)
def test_create_rejects_bad_names(user, tag_factory, body, errors):
    tag_factory(owner=user, name="Taken")

    response = client_for(user).post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == errors
    assert Tag.objects.filter(owner=user).count() == 1


def test_same_name_is_fine_for_another_user(user, tag_factory):
    tag_factory(name="VIP")

    assert client_for(user).post(URL, {"name": "VIP"}, format="json").status_code == 201


def test_rename_to_a_taken_name_changes_nothing(user, tag_factory):
    tag_factory(owner=user, name="A")
    b = tag_factory(owner=user, name="B")

    response = client_for(user).patch(f"{URL}{b.pk}/", {"name": "A"}, format="json")

    assert response.status_code == 400
    assert Tag.objects.get(pk=b.pk).name == "B"


def test_filter_by_name_and_order(user, tag_factory):
    for name in ("Newsletter", "VIP", "news-2024"):
        tag_factory(owner=user, name=name)

    response = client_for(user).get(URL, {"name": "news", "ordering": "-name"})

    assert [t["name"] for t in response.json()["results"]] == ["news-2024", "Newsletter"]


def test_add_list_and_remove_contacts(user, tag_factory, contact_factory):
    tag = tag_factory(owner=user)
    a, b, c = (contact_factory(owner=user, email=f"{n}@x.org") for n in "abc")
    api = client_for(user)
    url = f"{URL}{tag.pk}/contacts/"

    added = api.post(url, {"contact_ids": [str(a.pk), str(b.pk), str(a.pk)]}, format="json")
    assert (added.status_code, added.json()) == (200, {"added": 2, "contact_count": 2})
    again = api.post(url, {"contact_ids": [str(b.pk), str(c.pk)]}, format="json")
    assert again.json() == {"added": 1, "contact_count": 3}

    listed = api.get(url).json()
    assert listed["count"] == 3
    assert [m["email"] for m in listed["results"]] == ["a@x.org", "b@x.org", "c@x.org"]

    removed = api.post(f"{url}remove/", {"contact_ids": [str(a.pk), str(b.pk)]}, format="json")
    assert removed.json() == {"removed": 2, "contact_count": 1}
    assert api.delete(f"{url}{c.pk}/").status_code == 204
    assert _members(tag) == []
    assert api.get(f"{URL}{tag.pk}/").json()["contact_count"] == 0


def test_removing_a_non_member_counts_zero(user, tag_factory, contact_factory):
    tag, contact = tag_factory(owner=user), contact_factory(owner=user)

    response = client_for(user).post(
        f"{URL}{tag.pk}/contacts/remove/", {"contact_ids": [str(contact.pk)]}, format="json"
    )

    assert response.json() == {"removed": 0, "contact_count": 0}


def test_cannot_add_another_users_contact(user, tag_factory, contact_factory):
    tag = tag_factory(owner=user)
    mine, theirs = contact_factory(owner=user), contact_factory()

    response = client_for(user).post(
        f"{URL}{tag.pk}/contacts/", {"contact_ids": [str(mine.pk), str(theirs.pk)]}, format="json"
    )

    assert response.status_code == 400
    message = f"{theirs.pk} is not one of your contacts"
    assert response.json() == {"detail": f"contact_ids: {message}", "errors": {"contact_ids": [message]}}
    assert _members(tag) == []  # all or nothing: the caller's own contact was not added either


def test_remove_with_an_unknown_contact_removes_nothing(user, tag_factory, contact_factory):
    tag, mine = tag_factory(owner=user), contact_factory(owner=user)
    ContactTagManager().add_contact_to_tag(tag.pk, mine.pk)
    unknown = uuid.uuid4()

    response = client_for(user).post(
        f"{URL}{tag.pk}/contacts/remove/", {"contact_ids": [str(mine.pk), str(unknown)]}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["errors"] == {"contact_ids": [f"{unknown} is not one of your contacts"]}
    assert _members(tag) == [str(mine.pk)]


def test_delete_single_unknown_contact_is_a_404(user, tag_factory, contact):
    tag = tag_factory(owner=user)

    response = client_for(user).delete(f"{URL}{tag.pk}/contacts/{contact.pk}/")

    assert (response.status_code, response.json()) == (404, {"detail": "no such contact"})


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        pytest.param(
            {"contact_ids": "abc"}, {"contact_ids": ['Expected a list of items but got type "str".']}, id="str"
        ),
        pytest.param({"contact_ids": ["nope"]}, {"contact_ids": {"0": ["Must be a valid UUID."]}}, id="bad-uuid"),
        pytest.param({"contact_ids": []}, {"contact_ids": ["This list may not be empty."]}, id="empty"),
        pytest.param({"contact_ids": None}, {"contact_ids": ["This field may not be null."]}, id="null"),
        pytest.param(
            {"contact_ids": [12345678901234567890]}, {"contact_ids": {"0": ["Must be a valid UUID."]}}, id="int"
        ),
        pytest.param({}, {"contact_ids": ["This field is required."]}, id="missing"),
    ],
)
def test_membership_bodies_are_validated(user, tag_factory, body, errors):
    tag = tag_factory(owner=user)

    for url in (f"{URL}{tag.pk}/contacts/", f"{URL}{tag.pk}/contacts/remove/"):
        response = client_for(user).post(url, body, format="json")
        assert response.status_code == 400
        assert response.json()["errors"] == errors
    assert _members(tag) == []


def test_another_users_tag_is_a_404_everywhere(user, tag_factory, contact_factory):
    tag = tag_factory(name="Theirs")
    theirs = contact_factory(owner=tag.owner)
    mine = contact_factory(owner=user)
    api = client_for(user)
    base = f"{URL}{tag.pk}/"

    responses = [
        api.get(base),
        api.patch(base, {"name": "Mine"}, format="json"),
        api.delete(base),
        api.get(f"{base}contacts/"),
        api.post(f"{base}contacts/", {"contact_ids": [str(mine.pk)]}, format="json"),
        api.post(f"{base}contacts/remove/", {"contact_ids": [str(theirs.pk)]}, format="json"),
        api.delete(f"{base}contacts/{theirs.pk}/"),
    ]

    assert [r.status_code for r in responses] == [404] * 7
    assert responses[0].json() == {"detail": "No Tag matches the given query."}
    fresh = Tag.objects.get(pk=tag.pk)
    assert (fresh.name, fresh.contacts) == ("Theirs", [])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "not-a-uuid/"),
        ("get", "not-a-uuid/contacts/"),
        ("post", "12/contacts/remove/"),
        ("delete", "x/contacts/y/"),
    ],
)
def test_malformed_ids_in_the_url_are_a_404(user, method, path):
    response = getattr(client_for(user), method)(f"{URL}{path}", {"contact_ids": [str(uuid.uuid4())]}, format="json")

    assert response.status_code == 404
    assert "detail" in response.json()


def test_tag_contacts_are_paginated(user, tag_factory, contact_factory):
    tag = tag_factory(owner=user)
    contacts = [contact_factory(owner=user, email=f"m{n}@x.org") for n in range(3)]
    ContactTagManager().add_contacts_to_tag(tag.pk, [c.pk for c in contacts])

    page = client_for(user).get(f"{URL}{tag.pk}/contacts/", {"page_size": 2, "page": 2}).json()

    assert page["count"] == 3
    assert [m["email"] for m in page["results"]] == ["m2@x.org"]
