"""Every change is recorded: who, when, from what, to what; a refused change records nothing."""

from __future__ import annotations

import logging

import pytest

from config.models import ConfigChange, ConfigItem
from config.registry import ConfigValidationError
from config.services import ConfigManagerService, get_config_by_category


def test_set_records_old_and_new_values_with_the_user(user):
    ConfigManagerService.set_config("queue", "max_retries", 7, user=user, source="api")
    ConfigManagerService.set_config("queue", "max_retries", 9, user=user, source="admin")

    changes = list(ConfigChange.objects.order_by("changed_at").values_list("old_value", "new_value", "source"))
    assert changes == [(None, 7, "api"), (7, 9, "admin")]
    assert set(ConfigChange.objects.values_list("changed_by", flat=True)) == {user.pk}


def test_reset_goes_back_to_the_default_and_is_recorded(user):
    ConfigManagerService.set_config("alerts", "warning_seconds", 120, user=user)
    assert get_config_by_category("alerts")["warning_seconds"] == 120

    assert ConfigManagerService.reset_config("alerts", "warning_seconds", user=user) is True
    assert get_config_by_category("alerts")["warning_seconds"] == 300.0
    assert not ConfigItem.objects.exists()
    latest = ConfigChange.objects.order_by("-changed_at").first()
    assert (latest.old_value, latest.new_value) == (120.0, None)
    # Already at the default: nothing to record.
    assert ConfigManagerService.reset_config("alerts", "warning_seconds", user=user) is False
    assert ConfigChange.objects.count() == 2


def test_a_refused_value_records_no_change(user):
    with pytest.raises(ConfigValidationError):
        ConfigManagerService.set_config("queue", "max_retries", -1, user=user)
    assert not ConfigChange.objects.exists()
    assert not ConfigItem.objects.exists()


def test_bool_settings_take_true_and_false(db):
    assert ConfigManagerService.set_config("alerts", "notify_staff", "true") is True
    assert ConfigManagerService.set_config("alerts", "notify_staff", False) is False
    with pytest.raises(ConfigValidationError, match="must be true or false"):
        ConfigManagerService.set_config("alerts", "notify_staff", "yes please")


def test_describe_lists_every_setting_with_its_current_value(user):
    ConfigManagerService.set_config("queue", "max_retries", 3, user=user)
    rows = {row["name"]: row for row in ConfigManagerService.describe()}
    assert rows["queue.max_retries"]["value"] == 3
    assert rows["queue.max_retries"]["is_default"] is False
    assert rows["queue.max_retries"]["updated_by"] == user.username
    assert (rows["queue.max_retries"]["minimum"], rows["queue.max_retries"]["maximum"]) == (0, 100)
    assert rows["recovery.unknown_outcome"]["choices"] == ["retry", "park"]
    assert rows["queue.default_sending_rate"]["is_default"] is True


def test_a_process_logs_the_settings_it_sees_change(db, caplog):
    get_config_by_category("queue")  # first load: nothing to report
    ConfigItem.objects.create(category="queue", key="max_retries", value=4)  # as another process would
    ConfigManagerService.invalidate()
    with caplog.at_level(logging.INFO, logger="config.services"):
        assert get_config_by_category("queue")["max_retries"] == 4
    reloads = [r for r in caplog.records if r.getMessage() == "configuration reloaded"]
    assert [r.changed for r in reloads] == [["queue.max_retries"]]
