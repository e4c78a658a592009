"""Settings come from the environment through typed readers that fail loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from common.field_keys import derived_debug_key
from edm.env import (
    EnvError,
    env_bool,
    env_broker_url,
    env_choice,
    env_database,
    env_email,
    env_fernet_keys,
    env_int,
    env_list,
    env_public_url,
    env_redis_url,
    env_timezone,
)

ROOT = Path(__file__).resolve().parent.parent
NEW_KEY = Fernet.generate_key().decode()
OLD_KEY = Fernet.generate_key().decode()

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
    "public_url": settings.EDM_PUBLIC_URL, "unsubscribe_mailto": settings.EDM_UNSUBSCRIBE_MAILTO,
    "field_keys": settings.EDM_FIELD_KEYS, "allowed_backends": settings.EDM_ALLOWED_BACKENDS,
}))
"""


def load_settings(**env: str) -> subprocess.CompletedProcess:
    ignored = {
        "DATABASE_URL",
        "REDIS_URL",
        "SECRET_KEY",
        "DEBUG",
        "EDM_PUBLIC_URL",
        "EDM_UNSUBSCRIBE_MAILTO",
        "EDM_FIELD_KEYS",
        "EDM_ALLOWED_BACKENDS",
    }
    clean = {k: v for k, v in os.environ.items() if k not in ignored}
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
    assert (loaded["public_url"], loaded["unsubscribe_mailto"]) == ("http://127.0.0.1:8000", None)
    # Only with DEBUG=1: one key derived from SECRET_KEY (here the debug default).
    assert loaded["field_keys"] == [derived_debug_key("insecure-debug-only-key-never-use-in-production")]
    assert loaded["allowed_backends"] == ["django.core.mail.backends.smtp.EmailBackend", "anymail.backends.*"]


def test_postgres_url_gets_the_plans_pool_and_redis_url_the_cache_and_broker():
    result = load_settings(
        SECRET_KEY="x" * 50,
        DATABASE_URL="postgres://app:pw@db.internal:5432/edm",
        REDIS_URL="redis://cache.internal:6379/0",
        ALLOWED_HOSTS="edm.example.com, api.example.com",
        TIME_ZONE="Asia/Shanghai",
        EDM_PUBLIC_URL="https://mail.example.com/edm/",
        EDM_UNSUBSCRIBE_MAILTO="unsubscribe@example.com",
        EDM_FIELD_KEYS=f" {NEW_KEY}, {OLD_KEY} ",
        EDM_ALLOWED_BACKENDS="anymail.backends.mailgun.EmailBackend,django.core.mail.backends.smtp.EmailBackend",
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
    assert (loaded["public_url"], loaded["unsubscribe_mailto"]) == (
        "https://mail.example.com/edm",
        "unsubscribe@example.com",
    )
    assert loaded["field_keys"] == [NEW_KEY, OLD_KEY]
    assert loaded["allowed_backends"] == [
        "anymail.backends.mailgun.EmailBackend",
        "django.core.mail.backends.smtp.EmailBackend",
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({}, "SECRET_KEY must be set", id="no-secret-key"),
        pytest.param(
            {"SECRET_KEY": "x" * 50},
            "EDM_FIELD_KEYS must be set: it encrypts service credentials at rest (it may be omitted only with DEBUG=1)",
            id="no-field-keys",
        ),
        pytest.param(
            {"SECRET_KEY": "x" * 50, "EDM_FIELD_KEYS": f"{NEW_KEY},hunter2"},
            "EDM_FIELD_KEYS: key 2 of 2 is not a Fernet key (32 url-safe base64-encoded bytes)",
            id="bad-field-key",
        ),
        pytest.param(
            {"DEBUG": "1", "EDM_ALLOWED_BACKENDS": "anymail.backends.*,*"},
            "EDM_ALLOWED_BACKENDS: '*' is neither a dotted path",
            id="allow-everything",
        ),
        pytest.param(
            {"DEBUG": "1", "EDM_ALLOWED_BACKENDS": "EmailBackend"},
            "EDM_ALLOWED_BACKENDS: 'EmailBackend' is neither a dotted path",
            id="backend-without-module",
        ),
        pytest.param({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean", id="bad-bool"),
        pytest.param({"DEBUG": "1", "TIME_ZONE": "Mars/Base"}, "not a known time zone", id="bad-tz"),
        pytest.param(
            {"DEBUG": "1", "DB_POOL_MAX_SIZE": "lots", "DATABASE_URL": "postgres://h/d"}, "not an integer", id="bad-int"
        ),
        pytest.param({"DEBUG": "1", "REDIS_URL": "localhost:6379"}, "is not a Redis URL", id="bad-redis"),
        pytest.param(
            {"DEBUG": "1", "DATABASE_URL": "mysql://root:hunter2@db/edm"}, "not a 'mysql' URL", id="unsupported-db"
        ),
        pytest.param(
            {"DEBUG": "1", "DATABASE_URL": "postgres://u:hunter2@h:notaport/d"},
            "DATABASE_URL is not a usable database URL (scheme 'postgres')",
            id="bad-db-port",
        ),
        pytest.param({"DEBUG": "1", "DATABASE_URL": "postgres://u:hunter2@h"}, "names no database", id="no-db-name"),
        pytest.param(
            {"DEBUG": "1", "DATABASE_URL": "sqlite:////proc/no-such-dir/edm.sqlite3"},
            "DATABASE_URL: cannot create the SQLite file's directory '/proc/no-such-dir'",
            id="sqlite-dir",
        ),
        pytest.param(
            {"DEBUG": "1", "DATABASE_URL": "postgres://h/d", "DB_POOL_MIN_SIZE": "8", "DB_POOL_MAX_SIZE": "4"},
            "DB_POOL_MIN_SIZE=8 is above DB_POOL_MAX_SIZE=4",
            id="pool-min-above-max",
        ),
        pytest.param(
            {"DEBUG": "1", "REDIS_URL": "redis://:hunter2@h:port/0"}, "its host or port does not parse", id="redis-port"
        ),
        pytest.param(
            {"DEBUG": "1", "REDIS_URL": "redis://:hunter2@h:6379/cache"},
            "the database after the last / must be a number",
            id="redis-db",
        ),
        pytest.param(
            {"DEBUG": "1", "CELERY_BROKER_URL": "rabbit://u:hunter2@h//"},
            "CELERY_BROKER_URL is not a Celery broker URL (scheme 'rabbit')",
            id="broker-scheme",
        ),
        pytest.param(
            {"DEBUG": "1", "LOG_LEVEL": "LOUD"},
            "LOG_LEVEL='LOUD' must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
            id="log-level",
        ),
        pytest.param(
            {"DEBUG": "1", "LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' must be one of text, json", id="log-format"
        ),
        pytest.param(
            {"DEBUG": "1", "EMAIL_PORT": "70000"}, "EMAIL_PORT=70000 is above the maximum of 65535", id="port"
        ),
        pytest.param(
            {"DEBUG": "1", "EDM_PUBLIC_URL": "mail.example.com"},
            "EDM_PUBLIC_URL='mail.example.com' is not a usable public base URL: it needs http:// or https://",
            id="public-url-without-scheme",
        ),
        pytest.param(
            {"DEBUG": "1", "EDM_UNSUBSCRIBE_MAILTO": "unsubscribe at example.com"},
            "EDM_UNSUBSCRIBE_MAILTO='unsubscribe at example.com' is not an e-mail address",
            id="bad-mailto",
        ),
    ],
)
def test_bad_environment_stops_the_process_with_one_clear_line(env, message):
    result = load_settings(**env)
    assert result.returncode == 1
    assert result.stderr.startswith("configuration error: ")
    assert result.stderr.count("\n") == 1
    assert message in result.stderr
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


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param("ftp://mail.example.com", "needs http:// or https:// and a host", id="scheme"),
        pytest.param("https://", "needs http:// or https:// and a host", id="no-host"),
        pytest.param("https://mail.example.com/?a=1", "must not have a query or fragment", id="query"),
        pytest.param("https://mail.example.com/#top", "must not have a query or fragment", id="fragment"),
        pytest.param("https://u:hunter2@mail.example.com", "must not carry credentials", id="credentials"),
        pytest.param("https://mail.example.com:99999", "does not parse", id="port"),
        pytest.param("https://mail example.com", "characters a URL must percent-encode", id="space"),
        pytest.param("https://bücher.de", "characters a URL must percent-encode", id="idn"),
        pytest.param("https://m.example/" + "p" * 200, "longer than 200 characters", id="too-long"),
    ],
)
def test_a_public_url_that_cannot_go_into_mail_is_refused(value, problem):
    with pytest.raises(ImproperlyConfigured, match=problem):
        env_public_url("EDM_PUBLIC_URL", "http://127.0.0.1:8000", environ={"EDM_PUBLIC_URL": value})


def test_log_level_case_and_broker_urls():
    assert env_choice("L", "INFO", ["DEBUG", "INFO"], environ={"L": "debug"}) == "DEBUG"
    assert env_broker_url("B", None, environ={}) is None
    failover = "amqp://h1//;amqp://h2//"
    assert env_broker_url("B", None, environ={"B": failover}) == failover
    assert env_broker_url("B", None, environ={"B": "sqla+postgresql://h/d"}) == "sqla+postgresql://h/d"
    with pytest.raises(EnvError, match=r"scheme ''"):
        env_broker_url("B", None, environ={"B": "amqp://h//;nonsense"})
    assert env_redis_url("R", environ={"R": "unix:///run/redis.sock"}) == "unix:///run/redis.sock"
    assert env_redis_url("R", environ={"R": "rediss://:pw@h:6380/2"}) == "rediss://:pw@h:6380/2"


def test_public_url_and_mailbox_readers():
    assert env_public_url("U", "http://127.0.0.1:8000/", environ={}) == "http://127.0.0.1:8000"
    assert env_public_url("U", "x", environ={"U": " https://mail.example.com:8443/edm/ "}) == (
        "https://mail.example.com:8443/edm"
    )
    assert env_email("M", environ={}) is None
    assert env_email("M", environ={"M": ""}) is None
    assert env_email("M", environ={"M": "unsubscribe@example.com"}) == "unsubscribe@example.com"
    for bad in ("jörg@example.com", "a@b.example?subject=x"):
        with pytest.raises(ImproperlyConfigured, match="M="):
            env_email("M", environ={"M": bad})


def test_the_documented_key_command_makes_a_key_the_settings_accept():
    readme = (ROOT / "README.md").read_text()
    command = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
    assert command in readme
    made = subprocess.run(
        [sys.executable, "-c", "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert env_fernet_keys("K", debug_secret=None, environ={"K": f"{made},{NEW_KEY}"}) == [made, NEW_KEY]
