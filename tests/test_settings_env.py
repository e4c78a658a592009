"""Settings come from the environment through typed readers that fail loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from edm.env import env_bool, env_database, env_int, env_list, env_redis_url, env_timezone

ROOT = Path(__file__).resolve().parent.parent

PRINT_SETTINGS = """
import json
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "name": db["NAME"],
    "pool": db.get("OPTIONS", {}).get("pool"), "pool_checks": db["CONN_HEALTH_CHECKS"],
    "sqlite_mode": db.get("OPTIONS", {}).get("transaction_mode"),
    "cache": settings.CACHES["default"]["BACKEND"], "eager": settings.CELERY_TASK_ALWAYS_EAGER,
    "broker": settings.CELERY_BROKER_URL, "debug": settings.DEBUG, "tz": settings.TIME_ZONE,
    "hosts": settings.ALLOWED_HOSTS,
}))
"""


def load_settings(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG"}}
    clean.update(env, DJANGO_SETTINGS_MODULE="edm.settings")
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )


def test_defaults_are_sqlite_under_var_local_cache_and_eager_celery():
    result = load_settings(DEBUG="1")
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["engine"] == "django.db.backends.sqlite3"
    assert loaded["name"] == str(ROOT / "var" / "edm.sqlite3")
    assert loaded["sqlite_mode"] == "IMMEDIATE"
    assert loaded["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert (loaded["eager"], loaded["broker"], loaded["tz"]) == (True, None, "UTC")


def test_postgres_url_gets_the_plans_pool_and_redis_url_the_cache_and_broker():
    result = load_settings(
        SECRET_KEY="x" * 50,
        DATABASE_URL="postgres://app:pw@db.internal:5432/edm",
        REDIS_URL="redis://cache.internal:6379/0",
        ALLOWED_HOSTS="edm.example.com, api.example.com",
        TIME_ZONE="Asia/Shanghai",
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["engine"] == "django.db.backends.postgresql"
    assert loaded["pool"] == {"min_size": 5, "max_size": 20, "timeout": 30, "max_idle": 10}
    assert loaded["pool_checks"] is True  # connections are checked as they leave the pool
    assert loaded["cache"] == "django.core.cache.backends.redis.RedisCache"
    assert (loaded["eager"], loaded["broker"]) == (False, "redis://cache.internal:6379/0")
    assert loaded["hosts"] == ["edm.example.com", "api.example.com"]
    assert (loaded["debug"], loaded["tz"]) == (False, "Asia/Shanghai")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({}, "SECRET_KEY must be set", id="no-secret-key"),
        pytest.param({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean", id="bad-bool"),
        pytest.param({"DEBUG": "1", "TIME_ZONE": "Mars/Base"}, "not a known time zone", id="bad-tz"),
        pytest.param(
            {"DEBUG": "1", "DB_POOL_MAX_SIZE": "lots", "DATABASE_URL": "postgres://h/d"}, "not an integer", id="bad-int"
        ),
        pytest.param({"DEBUG": "1", "REDIS_URL": "localhost:6379"}, "is not a Redis URL", id="bad-redis"),
        pytest.param(
            {"DEBUG": "1", "DATABASE_URL": "mysql://root:hunter2@db/edm"}, "not a 'mysql' URL", id="unsupported-db"
        ),
    ],
)
def test_bad_environment_stops_the_process_with_one_clear_line(env, message):
    result = load_settings(**env)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured:")
    assert message in last_line
    assert "hunter2" not in result.stderr


def test_typed_readers():
    env = {"B": "yes", "I": "7", "L": "a, b,,c", "Z": "Europe/Berlin"}
    assert env_bool("B", False, environ=env) is True
    assert env_bool("MISSING", True, environ=env) is True
    assert env_int("I", 1, environ=env) == 7
    assert env_list("L", [], environ=env) == ["a", "b", "c"]
    assert env_timezone("Z", "UTC", environ=env) == "Europe/Berlin"
    assert env_redis_url("MISSING", environ=env) is None
    with pytest.raises(ImproperlyConfigured, match="below the minimum of 1"):
        env_int("I", 1, minimum=10, environ=env)
    with pytest.raises(ImproperlyConfigured, match="scheme 'nonsense'"):
        env_database("D", "nonsense://secret@x/y", environ={})
