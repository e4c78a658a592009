"""The suppression list in the Django admin: listed, filtered, searched, added and removed; entries not edited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from deliverability.models import Suppression
from deliverability.suppressions import suppression_add
from queues.models import SubTask
from queues.services import task_create

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:deliverability_suppression_changelist")
ADD = reverse("admin:deliverability_suppression_add")


@pytest.fixture
def staff_client(client, user_factory):
    client.force_login(user_factory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def entries(user_factory):
    ann = user_factory(username="ann")
    rows = [
        (ann.pk, "bounced@example.com", "hard_bounce", "smtp"),
        (ann.pk, "left@example.com", "unsubscribed", "unsubscribe"),
        (None, "trap@example.com", "complaint", "admin"),
    ]
    return [
        suppression_add(owner_id=owner, email=email, reason=reason, source=source)[0]
        for owner, email, reason, source in rows
    ]


def listed(response) -> list[str]:
    return sorted(entry.email for entry in response.context["cl"].result_list)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param({}, ["bounced@example.com", "left@example.com", "trap@example.com"], id="all"),
        pytest.param({"reason": "hard_bounce"}, ["bounced@example.com"], id="reason"),
        pytest.param({"source": "unsubscribe"}, ["left@example.com"], id="source"),
        pytest.param({"scope": "platform"}, ["trap@example.com"], id="platform-wide"),
        pytest.param({"scope": "owners"}, ["bounced@example.com", "left@example.com"], id="owners"),
        pytest.param({"q": "TRAP@"}, ["trap@example.com"], id="search-email"),
        pytest.param({"q": "ann"}, ["bounced@example.com", "left@example.com"], id="search-owner"),
    ],
)
def test_the_list_filters_and_searches(staff_client, entries, query, expected):
    response = staff_client.get(CHANGELIST, query)

    assert response.status_code == 200
    assert listed(response) == expected


def test_the_list_shows_platform_entries_as_such(staff_client, entries):
    response = staff_client.get(CHANGELIST, {"scope": "platform"})

    assert "(platform-wide)" in response.content.decode()


def test_adding_goes_through_the_list_rules(staff_client, user):
    response = staff_client.post(ADD, {"owner": str(user.pk), "email": " Ann@Example.COM ", "reason": "manual"})

    assert response.status_code == 302
    entry = Suppression.objects.get()
    assert (entry.owner_id, entry.email, entry.reason, entry.source) == (user.pk, "ann@example.com", "manual", "admin")


def test_an_entry_without_owner_is_platform_wide(staff_client):
    staff_client.post(ADD, {"owner": "", "email": "trap@example.com", "reason": "complaint", "detail": "spam trap"})

    assert list(Suppression.objects.values_list("owner_id", "email", "detail")) == [
        (None, "trap@example.com", "spam trap")
    ]


@pytest.mark.parametrize(
    ("email", "error"),
    [
        pytest.param("not-an-address", "Enter a valid email address", id="bad-address"),
        pytest.param("KNOWN@example.com", "already exists", id="already-listed"),
    ],
)
def test_a_bad_or_known_address_is_a_form_error_and_adds_nothing(staff_client, user, email, error):
    suppression_add(owner_id=user.pk, email="known@example.com", reason="manual", source="api")

    response = staff_client.post(ADD, {"owner": str(user.pk), "email": email, "reason": "manual"})

    assert response.status_code == 200
    assert error in response.content.decode()
    assert Suppression.objects.count() == 1


def test_an_entry_is_read_only_once_added(staff_client, entries):
    entry = entries[0]
    url = reverse("admin:deliverability_suppression_change", args=[entry.pk])

    page = staff_client.get(url)
    staff_client.post(url, {"email": "other@example.com", "reason": "manual", "detail": "changed"})

    assert page.status_code == 200
    assert 'name="email"' not in page.content.decode()
    entry.refresh_from_db()
    assert (entry.email, entry.reason, entry.detail) == ("bounced@example.com", "hard_bounce", "")


def test_entries_are_removed_one_by_one_or_in_bulk(staff_client, entries):
    one = reverse("admin:deliverability_suppression_delete", args=[entries[0].pk])

    staff_client.post(one, {"post": "yes"})
    staff_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [str(entries[1].pk)], "post": "yes"}
    )

    assert list(Suppression.objects.values_list("email", flat=True)) == ["trap@example.com"]


def test_the_task_page_counts_suppressed_recipients(staff_client, user):
    task = task_create(owner=user, name="n", subject="s", body_text="b", recipients=["a@x.example", "b@x.example"])
    SubTask.objects.filter(task=task, recipient_email="a@x.example").update(status=SubTask.Status.SUPPRESSED)

    page = staff_client.get(reverse("admin:queues_task_change", args=[task.pk]))

    assert "1 pending, 1 suppressed, 2 in all" in page.content.decode()


def test_suppressed_is_a_subtask_status_filter(staff_client, subtask_factory):
    subtask_factory(status=SubTask.Status.SUPPRESSED, recipient_email="gone@example.com")
    subtask_factory(recipient_email="here@example.com")

    response = staff_client.get(reverse("admin:queues_subtask_changelist"), {"status__exact": "suppressed"})

    assert [s.recipient_email for s in response.context["cl"].result_list] == ["gone@example.com"]
