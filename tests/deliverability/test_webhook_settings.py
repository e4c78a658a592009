"""The ESP webhooks' settings come from the environment; a malformed secret stops the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from edm.env import env_basic_auth_list

ROOT = Path(__file__).resolve().parent.parent.parent

PRINT_ANYMAIL = "import json; from django.conf import settings; print(json.dumps(settings.ANYMAIL))"
KEYS = ("ANYMAIL_WEBHOOK_SECRET", "MAILGUN_WEBHOOK_SIGNING_KEY", "MAILERSEND_SIGNING_SECRET", "MANDRILL_WEBHOOK_KEY")


def load_anymail_settings(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", *KEYS}}
    clean.update(env, DJANGO_SETTINGS_MODULE="edm.settings", DEBUG="1")
    return subprocess.run(
        [sys.executable, "-c", PRINT_ANYMAIL], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )


def test_secrets_and_signing_keys_reach_anymail():
    result = load_anymail_settings(
        ANYMAIL_WEBHOOK_SECRET="esp:first-secret, esp:next-secret",
        MAILGUN_WEBHOOK_SIGNING_KEY="key-mg",
        MANDRILL_WEBHOOK_KEY="key-md",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "WEBHOOK_SECRET": ["esp:first-secret", "esp:next-secret"],
        "MAILGUN_WEBHOOK_SIGNING_KEY": "key-mg",
        "MANDRILL_WEBHOOK_KEY": "key-md",
    }


def test_nothing_set_leaves_anymail_without_a_secret():
    result = load_anymail_settings()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {}


def test_a_secret_without_a_password_stops_the_process_without_echoing_it():
    result = load_anymail_settings(ANYMAIL_WEBHOOK_SECRET="hunter2")
    assert result.returncode == 1
    assert result.stderr == (
        "configuration error: ANYMAIL_WEBHOOK_SECRET must be user:password (comma-separated to accept several)\n"
    )
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize("value", ["user", ":password", "user:", "ok:pair,broken"])
def test_basic_auth_reader_refuses_incomplete_pairs(value):
    with pytest.raises(ImproperlyConfigured, match="must be user:password"):
        env_basic_auth_list("S", environ={"S": value})


def test_basic_auth_reader_keeps_colons_in_passwords():
    assert env_basic_auth_list("S", environ={"S": "u:p:q"}) == ["u:p:q"]
    assert env_basic_auth_list("S", environ={}) == []
