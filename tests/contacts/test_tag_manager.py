from __future__ import annotations

import uuid

import pytest
from django.db import DataError, connection, transaction

from contacts.exceptions import ContactNotFound, TagNotFound
from contacts.models import Contact, Tag
from contacts.tag_manager import ContactTagManager
from tests.processes import run_in_processes

manager = ContactTagManager()


def test_add_then_query_both_ways(tag, contact_factory):
    alice, bob = contact_factory.create_batch(2, owner=tag.owner)

    assert manager.add_contact_to_tag(tag.pk, alice.pk) is True
    assert manager.add_contact_to_tag(str(tag.pk), str(bob.pk)) is True

    tag.refresh_from_db()
    assert tag.contacts == [str(alice.pk), str(bob.pk)]
    assert set(manager.contacts_of_tag(tag.pk)) == {alice, bob}
    assert list(manager.tags_of_contact(alice.pk)) == [tag]


def test_adding_twice_keeps_one_membership(tag, contact_factory):
    member = contact_factory(owner=tag.owner)
    manager.add_contact_to_tag(tag.pk, member.pk)

    assert manager.add_contact_to_tag(tag.pk, member.pk) is False
    tag.refresh_from_db()
    assert tag.contacts == [str(member.pk)]


def test_remove(tag, contact_factory):
    keep, drop = contact_factory.create_batch(2, owner=tag.owner)
    manager.add_contacts_to_tag(tag.pk, [keep.pk, drop.pk])

    assert manager.remove_contact_from_tag(tag.pk, drop.pk) is True
    assert manager.remove_contact_from_tag(tag.pk, drop.pk) is False
    tag.refresh_from_db()
    assert tag.contacts == [str(keep.pk)]
    assert list(manager.tags_of_contact(drop.pk)) == []


def test_tags_of_contact_lists_only_the_holding_tags(user, tag_factory, contact_factory):
    member = contact_factory(owner=user)
    holding = tag_factory.create_batch(3, owner=user)
    tag_factory.create_batch(2, owner=user)  # tags without the contact
    for tag in holding:
        manager.add_contact_to_tag(tag.pk, member.pk)

    assert set(manager.tags_of_contact(member.pk)) == set(holding)


def test_contacts_of_tag_ignores_malformed_legacy_entries(tag, contact_factory):
    member = contact_factory(owner=tag.owner)
    Tag.objects.filter(pk=tag.pk).update(contacts=[str(member.pk), "not-a-uuid", 42])

    assert list(manager.contacts_of_tag(tag.pk)) == [member]


@pytest.mark.postgres_only
def test_contacts_of_tag_unguarded_is_the_same_and_fails_on_a_malformed_entry(tag, contact_factory):
    members = contact_factory.create_batch(3, owner=tag.owner)
    contact_factory(owner=tag.owner)  # not a member
    manager.add_contacts_to_tag(tag.pk, [c.pk for c in members])

    assert set(manager.contacts_of_tag(tag.pk, guard=False)) == set(members)
    Tag.objects.filter(pk=tag.pk).update(contacts=[str(members[0].pk), "not-a-uuid"])
    with pytest.raises(DataError), transaction.atomic():
        list(manager.contacts_of_tag(tag.pk, guard=False))


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda t, c: manager.add_contact_to_tag(uuid.uuid4(), c.pk), id="add-unknown-tag"),
        pytest.param(lambda t, c: manager.add_contact_to_tag("no-uuid", c.pk), id="add-malformed-tag"),
        pytest.param(lambda t, c: manager.remove_contact_from_tag(uuid.uuid4(), c.pk), id="remove-unknown-tag"),
        pytest.param(lambda t, c: manager.contacts_of_tag(uuid.uuid4()), id="contacts-of-unknown-tag"),
    ],
)
def test_unknown_tag_is_a_domain_error_and_changes_nothing(tag, contact_factory, call):
    member = contact_factory(owner=tag.owner)
    manager.add_contact_to_tag(tag.pk, member.pk)

    with pytest.raises(TagNotFound, match="does not exist"):
        call(tag, member)

    tag.refresh_from_db()
    assert tag.contacts == [str(member.pk)]


@pytest.mark.parametrize(
    "contact_id",
    [
        pytest.param(lambda other: uuid.uuid4(), id="unknown"),
        pytest.param(lambda other: "12345", id="malformed"),
        pytest.param(lambda other: other.pk, id="another-users-contact"),
    ],
)
def test_unknown_contact_is_a_domain_error_and_changes_nothing(tag, contact_factory, contact_id):
    member = contact_factory(owner=tag.owner)
    someone_elses = contact_factory()  # a different owner
    manager.add_contact_to_tag(tag.pk, member.pk)

    with pytest.raises(ContactNotFound, match="does not exist"):
        manager.add_contacts_to_tag(tag.pk, [contact_factory(owner=tag.owner).pk, contact_id(someone_elses)])
    with pytest.raises(ContactNotFound):
        manager.remove_contact_from_tag(tag.pk, contact_id(someone_elses))

    tag.refresh_from_db()
    assert tag.contacts == [str(member.pk)]


def test_tags_of_unknown_contact_is_a_domain_error(db):
    with pytest.raises(ContactNotFound):
        manager.tags_of_contact(uuid.uuid4())


def add_one(tag_id: str, contact_id: str) -> bool:
    return ContactTagManager().add_contact_to_tag(tag_id, contact_id)


def remove_one(tag_id: str, contact_id: str) -> bool:
    return ContactTagManager().remove_contact_from_tag(tag_id, contact_id)


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_adds_from_separate_processes_all_land(tag, contact_factory):
    contacts = contact_factory.create_batch(20, owner=tag.owner)

    results = run_in_processes(add_one, [(str(tag.pk), str(c.pk)) for c in contacts])

    assert results == [True] * 20
    tag.refresh_from_db()
    assert sorted(tag.contacts) == sorted(str(c.pk) for c in contacts)


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_removes_and_adds_from_separate_processes_all_land(tag, contact_factory):
    leaving = contact_factory.create_batch(10, owner=tag.owner)
    joining = contact_factory.create_batch(10, owner=tag.owner)
    manager.add_contacts_to_tag(tag.pk, [c.pk for c in leaving])

    calls = [(remove_one, c) for c in leaving] + [(add_one, c) for c in joining]
    run_in_processes(_dispatch, [(f.__name__, str(tag.pk), str(c.pk)) for f, c in calls])

    tag.refresh_from_db()
    assert sorted(tag.contacts) == sorted(str(c.pk) for c in joining)


def _dispatch(name: str, tag_id: str, contact_id: str) -> bool:
    return {"add_one": add_one, "remove_one": remove_one}[name](tag_id, contact_id)


def gin_index_scans() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'idx_tags_contacts_gin'")
        return cursor.fetchone()[0]


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_tags_of_contact_is_served_by_the_gin_index(user, contact_factory):
    member = contact_factory(owner=user)
    # Long member lists, stored out of line: the case where a plain query would scan.
    Tag.objects.bulk_create(
        [Tag(owner=user, name=f"t{i}", contacts=[str(uuid.uuid4()) for _ in range(60)]) for i in range(3000)]
    )
    holder = Tag.objects.create(owner=user, name="holder", contacts=[str(member.pk)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tags")

    before = gin_index_scans()
    assert list(manager.tags_of_contact(member.pk)) == [holder]
    assert gin_index_scans() == before + 1


def test_contact_model_has_no_tags_field():
    assert "tags" not in {f.name for f in Contact._meta.get_fields()}
