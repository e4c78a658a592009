"""The staff-only configuration API."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from config.models import ConfigChange, ConfigItem
from config.registry import REGISTRY
from config.services import get_config_by_category


@pytest.fixture
def staff_api(admin_user):
    api = APIClient()
    api.force_authenticate(admin_user)
    return api


def test_lists_every_declared_setting(staff_api):
    response = staff_api.get("/api/config/")
    assert response.status_code == 200
    assert {row["name"] for row in response.json()} == {s.name for s in REGISTRY.values()}
    queue_only = staff_api.get("/api/config/", {"category": "queue"}).json()
    assert {row["category"] for row in queue_only} == {"queue"}


def test_put_changes_a_value_and_records_who(staff_api, admin_user):
    response = staff_api.put("/api/config/queue/max_retries/", {"value": 3}, format="json")
    assert response.status_code == 200
    assert (response.json()["value"], response.json()["is_default"]) == (3, False)
    assert get_config_by_category("queue")["max_retries"] == 3
    change = ConfigChange.objects.get()
    assert (change.changed_by, change.source, change.new_value) == (admin_user, "api", 3)
    history = staff_api.get("/api/config/changes/", {"key": "max_retries"}).json()
    assert [(c["old_value"], c["new_value"], c["changed_by"]) for c in history["results"]] == [
        (None, 3, admin_user.username)
    ]


def test_delete_resets_to_the_default(staff_api):
    staff_api.put("/api/config/queue/max_retries/", {"value": 3}, format="json")
    response = staff_api.delete("/api/config/queue/max_retries/")
    assert response.status_code == 200
    assert (response.json()["value"], response.json()["is_default"]) == (5, True)
    assert not ConfigItem.objects.exists()


@pytest.mark.parametrize(
    ("url", "body", "status", "message"),
    [
        pytest.param("/api/config/queue/max_retries/", {"value": "x"}, 400, "must be an integer", id="wrong-type"),
        pytest.param("/api/config/queue/max_retries/", {"value": 101}, 400, "must be at most 100", id="too-big"),
        pytest.param("/api/config/queue/max_retries/", {}, 400, "value", id="missing-value"),
        pytest.param("/api/config/queue/max_retries/", {"value": None}, 400, "null", id="null"),
        pytest.param("/api/config/queue/nope/", {"value": 1}, 404, "unknown setting queue.nope", id="unknown-key"),
        pytest.param("/api/config/nope/max_retries/", {"value": 1}, 404, "unknown setting", id="unknown-category"),
    ],
)
def test_bad_values_give_a_json_error_and_change_nothing(staff_api, url, body, status, message):
    response = staff_api.put(url, body, format="json")
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert not ConfigItem.objects.exists()
    assert not ConfigChange.objects.exists()


def test_an_unknown_category_filter_is_a_400(staff_api):
    response = staff_api.get("/api/config/", {"category": "nope"})
    assert response.status_code == 400
    assert "unknown category 'nope'" in response.json()["detail"]


def test_config_is_staff_only(user):
    api = APIClient()
    assert api.get("/api/config/").status_code in (401, 403)
    api.force_authenticate(user)
    assert api.get("/api/config/").status_code == 403
    assert api.put("/api/config/queue/max_retries/", {"value": 1}, format="json").status_code == 403
    assert not ConfigItem.objects.exists()


def test_change_history_dates_beyond_postgresql_offsets_or_utc_are_handled(staff_api):
    staff_api.put("/api/config/queue/max_retries/", {"value": 3}, format="json")

    # Python takes a +17:43 offset, PostgreSQL does not: the moment goes to the query in UTC.
    early = staff_api.get("/api/config/changes/", {"changed_before": "0257-10-07T06:44:36+17:43"})
    assert (early.status_code, early.json()["count"]) == (200, 0)
    late = staff_api.get("/api/config/changes/", {"changed_after": "2000-01-01T00:00:00+17:43"})
    assert (late.status_code, late.json()["count"]) == (200, 1)

    overflow = staff_api.get("/api/config/changes/", {"changed_before": "9999-12-31T23:00:00-14:00"})
    assert overflow.status_code == 400
    assert "between the years 1 and 9999" in overflow.json()["detail"]
