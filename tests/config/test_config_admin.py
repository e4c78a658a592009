"""Changing settings in the admin: validated, recorded with the user, reset by deleting."""

from __future__ import annotations

import pytest

from config.models import ConfigChange, ConfigItem
from config.services import get_config_by_category


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_adding_an_override_goes_through_the_service(staff_client, admin_user):
    response = staff_client.post(
        "/admin/config/configitem/add/", {"setting": "queue.max_retries", "value": "8"}, follow=True
    )
    assert response.status_code == 200
    assert get_config_by_category("queue")["max_retries"] == 8
    change = ConfigChange.objects.get()
    assert (change.key, change.old_value, change.new_value, change.source, change.changed_by) == (
        "max_retries",
        None,
        8,
        "admin",
        admin_user,
    )


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        pytest.param("queue.max_retries", "-3", "must be at least 0", id="below-minimum"),
        pytest.param("queue.max_retries", "many", "must be an integer", id="wrong-type"),
        pytest.param("queue.quota_timezone", "Nowhere/Land", "must be a time zone name", id="bad-zone"),
        pytest.param("recovery.unknown_outcome", "drop", "must be one of retry, park", id="not-a-choice"),
    ],
)
def test_an_invalid_value_is_refused_with_its_message_and_changes_nothing(staff_client, setting, value, message):
    response = staff_client.post("/admin/config/configitem/add/", {"setting": setting, "value": value})
    assert response.status_code == 200  # the form again, with the error
    assert message in response.content.decode()
    assert not ConfigItem.objects.exists()
    assert not ConfigChange.objects.exists()


def test_a_time_zone_is_accepted_as_plain_text(staff_client):
    staff_client.post("/admin/config/configitem/add/", {"setting": "queue.quota_timezone", "value": "Europe/Paris"})
    assert get_config_by_category("queue")["quota_timezone"] == "Europe/Paris"


def test_editing_and_deleting_record_each_change(staff_client):
    staff_client.post("/admin/config/configitem/add/", {"setting": "queue.max_retries", "value": "8"})
    item = ConfigItem.objects.get()
    staff_client.post(f"/admin/config/configitem/{item.pk}/change/", {"value": "2"})
    assert get_config_by_category("queue")["max_retries"] == 2
    staff_client.post(f"/admin/config/configitem/{item.pk}/delete/", {"post": "yes"})
    assert get_config_by_category("queue")["max_retries"] == 5
    history = list(ConfigChange.objects.order_by("changed_at").values_list("old_value", "new_value"))
    assert history == [(None, 8), (8, 2), (2, None)]


def test_the_change_history_is_read_only(staff_client):
    staff_client.post("/admin/config/configitem/add/", {"setting": "queue.max_retries", "value": "8"})
    assert staff_client.get("/admin/config/configchange/").status_code == 200
    assert staff_client.get("/admin/config/configchange/add/").status_code == 403
