from __future__ import annotations

import pytest

from config.models import ConfigItem
from config.registry import REGISTRY, ConfigValidationError
from config.services import ConfigManagerService, get_config_by_category


def test_defaults_are_typed_and_complete(db):
    queue = get_config_by_category("queue")
    assert queue["default_sending_rate"] == 1.0
    assert (queue["max_retries"], queue["claim_batch_size"]) == (5, 50)
    assert (queue["no_service_sleep_seconds"], queue["no_work_sleep_seconds"], queue["error_sleep_seconds"]) == (
        1.0,
        2.0,
        5.0,
    )
    assert queue["quota_timezone"] == "UTC"
    assert set(queue) == {key for (category, key) in REGISTRY if category == "queue"}
    alerts = get_config_by_category("alerts")
    assert (alerts["warning_seconds"], alerts["critical_seconds"], alerts["emergency_seconds"]) == (300, 600, 1800)
    assert get_config_by_category("recovery")["unknown_outcome"] == "retry"


def test_a_stored_value_overrides_the_default(user):
    assert ConfigManagerService.set_config("queue", "max_retries", "7", user=user) == 7
    assert get_config_by_category("queue")["max_retries"] == 7
    item = ConfigItem.objects.get(category="queue", key="max_retries")
    assert (item.value, item.updated_by) == (7, user)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_retries", "lots", "queue.max_retries must be an integer, got 'lots'"),
        ("max_retries", 2.5, "must be an integer"),
        ("max_retries", -1, "must be at least 0"),
        ("max_retries", True, "must be an integer"),
        ("default_sending_rate", "nan", "must be a finite number"),
        ("default_sending_rate", 100000, "must be at most 86400"),
        ("quota_timezone", "Mars/Olympus", "must be a time zone name"),
        ("quota_timezone", 5, "must be a string"),
        ("no_such_key", 1, "unknown setting queue.no_such_key"),
    ],
)
def test_invalid_values_are_refused_and_change_nothing(db, key, value, message):
    with pytest.raises(ConfigValidationError, match=message.replace(".", r"\.").replace("(", r"\(")):
        ConfigManagerService.set_config("queue", key, value)
    assert not ConfigItem.objects.exists()


def test_recovery_unknown_outcome_takes_only_its_choices(db):
    with pytest.raises(ConfigValidationError, match="must be one of retry, park"):
        ConfigManagerService.set_config("recovery", "unknown_outcome", "drop")


def test_a_corrupt_stored_value_falls_back_to_the_default(db):
    ConfigItem.objects.create(category="queue", key="max_retries", value="not a number")
    assert get_config_by_category("queue")["max_retries"] == 5


def test_an_unknown_category_is_refused(db):
    with pytest.raises(ConfigValidationError, match="unknown config category 'nope'"):
        get_config_by_category("nope")
