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

from config.models import ConfigItem
from config.registry import CATEGORIES, REGISTRY, ConfigValidationError, get_setting

CACHE_SECONDS = 1.0
logger = logging.getLogger(__name__)


class ConfigManagerService:
    _lock = threading.Lock()
    _loaded_at = float("-inf")
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
    @transaction.atomic
    def set_config(cls, category: str, key: str, value: Any, *, user=None) -> Any:
        """Validate and store one value; nothing is written if it does not validate."""
        cleaned = get_setting(category, key).clean(value)
        ConfigItem.objects.update_or_create(category=category, key=key, defaults={"value": cleaned, "updated_by": user})
        cls.invalidate()
        return cleaned

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
            if cls._loaded_at == float("-inf"):
                raise
            # The database is away for a moment: keep serving what was read
            # last rather than stop every caller. The next call tries again.
            logger.warning("configuration could not be re-read; using the last values read")
            connection.close()
            return cls._stored
        with cls._lock:
            cls._stored = stored
            cls._loaded_at = now
        return stored


def get_config_by_category(category: str) -> dict[str, Any]:
    return ConfigManagerService.get_config_by_category(category)
