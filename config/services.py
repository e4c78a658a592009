"""ConfigManagerService: typed settings from the database, hot-reloaded in every process.

Each process keeps the stored values for at most ``CACHE_SECONDS`` and then
reads them again (one small query), so a change made in the admin or the API
reaches every running scheduler within that bound, without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import DatabaseError, connection, transaction

from config.models import ConfigChange, ConfigItem
from config.registry import CATEGORIES, REGISTRY, ConfigValidationError, Setting, get_setting

CACHE_SECONDS = 1.0
logger = logging.getLogger(__name__)


class ConfigManagerService:
    _lock = threading.Lock()
    _loaded_at = float("-inf")
    _loaded_once = False
    _stored: dict[tuple[str, str], Any] = {}

    @classmethod
    def get_config_by_category(cls, category: str) -> dict[str, Any]:
        """All settings of a category as {key: typed value}, stored values over defaults."""
        if category not in CATEGORIES:
            raise ConfigValidationError(f"unknown config category {category!r}; known: {', '.join(CATEGORIES)}")
        stored = cls._current()
        values = {}
        for (cat, key), setting in REGISTRY.items():
            if cat != category:
                continue
            raw = stored.get((cat, key), setting.default)
            try:
                values[key] = setting.clean(raw)
            except ConfigValidationError:
                # A row written around the validation (raw SQL) must not stop the
                # scheduler: fall back to the declared default.
                values[key] = setting.default
        return values

    @classmethod
    def get(cls, category: str, key: str) -> Any:
        get_setting(category, key)
        return cls.get_config_by_category(category)[key]

    @classmethod
    def set_config(cls, category: str, key: str, value: Any, *, user=None, source: str = "code") -> Any:
        """Validate and store one value, recording who changed it; nothing is written if it does not validate."""
        cleaned = get_setting(category, key).clean(value)
        with transaction.atomic():
            item = ConfigItem.objects.select_for_update().filter(category=category, key=key).first()
            old = item.value if item else None
            if item is None:
                ConfigItem.objects.create(category=category, key=key, value=cleaned, updated_by=user)
            else:
                item.value, item.updated_by = cleaned, user
                item.save(update_fields=["value", "updated_by", "updated_at"])
            ConfigChange.objects.create(
                category=category, key=key, old_value=old, new_value=cleaned, changed_by=user, source=source
            )
        cls.invalidate()
        logger.info("configuration set", extra={"setting": f"{category}.{key}", "value": cleaned, "source": source})
        return cleaned

    @classmethod
    def reset_config(cls, category: str, key: str, *, user=None, source: str = "code") -> bool:
        """Back to the declared default; returns False (and records nothing) if it was there already."""
        get_setting(category, key)
        with transaction.atomic():
            item = ConfigItem.objects.select_for_update().filter(category=category, key=key).first()
            if item is None:
                return False
            item.delete()
            ConfigChange.objects.create(
                category=category, key=key, old_value=item.value, new_value=None, changed_by=user, source=source
            )
        cls.invalidate()
        logger.info("configuration reset to default", extra={"setting": f"{category}.{key}", "source": source})
        return True

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Every declared setting with its current value, for the API and the admin."""
        stored = {(i.category, i.key): i for i in ConfigItem.objects.select_related("updated_by")}
        rows = []
        for (category, key), setting in REGISTRY.items():
            item = stored.get((category, key))
            rows.append(describe_setting(setting, item))
        return rows

    @classmethod
    def invalidate(cls) -> None:
        with cls._lock:
            cls._loaded_at = float("-inf")

    @classmethod
    def _current(cls) -> dict[tuple[str, str], Any]:
        now = time.monotonic()
        if now - cls._loaded_at < CACHE_SECONDS:
            return cls._stored
        try:
            stored = {(c, k): v for c, k, v in ConfigItem.objects.values_list("category", "key", "value")}
        except DatabaseError:
            if not cls._loaded_once:
                raise
            # The database is away for a moment: keep serving what was read
            # last rather than stop every caller. The next call tries again.
            logger.warning("configuration could not be re-read; using the last values read")
            connection.close()
            return cls._stored
        with cls._lock:
            previous, first = cls._stored, not cls._loaded_once
            cls._loaded_once = True
            cls._stored = stored
            cls._loaded_at = now
        if not first and stored != previous:
            changed = sorted(
                f"{c}.{k}" for c, k in stored.keys() | previous.keys() if stored.get((c, k)) != previous.get((c, k))
            )
            # Every process says when it started using new values: the proof that a change arrived.
            logger.info("configuration reloaded", extra={"changed": changed})
        return stored


def get_config_by_category(category: str) -> dict[str, Any]:
    return ConfigManagerService.get_config_by_category(category)


def describe_setting(setting: Setting, item: ConfigItem | None) -> dict[str, Any]:
    try:
        value = setting.clean(item.value) if item else setting.default
    except ConfigValidationError:
        value = setting.default
    return {
        "category": setting.category,
        "key": setting.key,
        "name": setting.name,
        "type": setting.type.__name__,
        "value": value,
        "default": setting.default,
        "is_default": item is None,
        "minimum": setting.minimum,
        "maximum": setting.maximum,
        "choices": list(setting.choices) if setting.choices else None,
        "description": setting.description,
        "updated_at": item.updated_at if item else None,
        "updated_by": item.updated_by.get_username() if item and item.updated_by else None,
    }
