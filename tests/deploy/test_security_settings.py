"""HTTPS behind a TLS-terminating proxy: production defaults that pass ``check --deploy``, off with DEBUG."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.test import Client, override_settings

from tests.metrics_auth import METRICS_AUTH

ROOT = Path(__file__).resolve().parents[2]


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What a production deployment sets, and nothing from the test run's own environment."""
    return {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "edm.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'deploy.sqlite3'}",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "edm.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://edm.example.com",
        "EDM_PUBLIC_URL": "https://edm.example.com",
        "EDM_METRICS_TOKEN": secrets.token_urlsafe(32),
        "EDM_FIELD_KEYS": Fernet.generate_key().decode(),
        **extra,
    }


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_in_the_production_configuration(tmp_path):
    result = check_deploy(production_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (1 silenced)."
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("env", "warning"),
    [
        pytest.param({"SECURE_HSTS_SECONDS": "0"}, "security.W004", id="no-hsts"),
        pytest.param({"SECURE_SSL_REDIRECT": "0"}, "security.W008", id="no-redirect"),
        pytest.param({"SESSION_COOKIE_SECURE": "0"}, "security.W012", id="session-cookie"),
        pytest.param({"EDM_METRICS_TOKEN": ""}, "monitoring.W001", id="no-metrics-credentials"),
    ],
)
def test_check_deploy_warns_when_a_protection_is_turned_off(tmp_path, env, warning):
    result = check_deploy(production_env(tmp_path, **env))
    assert result.returncode == 1
    assert f"({warning})" in result.stderr
    assert result.stderr.count("?: (") == 1  # that warning and no other


PRINT = """
import json
from django.conf import settings
print(json.dumps({name: getattr(settings, name) for name in (
    "SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "CSRF_TRUSTED_ORIGINS",
)}))
"""


def load(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRINT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_production_defaults_and_debug_defaults(tmp_path):
    production = json.loads(load(production_env(tmp_path)).stdout)
    assert production == {
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "CSRF_TRUSTED_ORIGINS": ["https://edm.example.com"],
    }
    debug = json.loads(load(production_env(tmp_path, DEBUG="1", CSRF_TRUSTED_ORIGINS="")).stdout)
    assert debug == {
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_HSTS_PRELOAD": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "CSRF_TRUSTED_ORIGINS": [],
    }


def test_each_setting_comes_from_the_environment(tmp_path):
    env = production_env(
        tmp_path,
        EDM_PROXY_SSL_HEADER="HTTP_X_FORWARDED_SCHEME",
        SECURE_HSTS_SECONDS="600",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="0",
        SECURE_HSTS_PRELOAD="no",
    )
    loaded = json.loads(load(env).stdout)
    assert loaded["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_SCHEME", "https"]
    assert (loaded["SECURE_HSTS_SECONDS"], loaded["SECURE_HSTS_INCLUDE_SUBDOMAINS"]) == (600, False)
    assert loaded["SECURE_HSTS_PRELOAD"] is False
    assert (
        json.loads(load(production_env(tmp_path, EDM_PROXY_SSL_HEADER="off")).stdout)["SECURE_PROXY_SSL_HEADER"] is None
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"EDM_PROXY_SSL_HEADER": "X-Forwarded-Proto"}, "EDM_PROXY_SSL_HEADER='X-Forwarded-Proto'", id="header"
        ),
        pytest.param({"SECURE_HSTS_SECONDS": "a year"}, "SECURE_HSTS_SECONDS='a year' is not an integer", id="hsts"),
        pytest.param({"SECURE_SSL_REDIRECT": "maybe"}, "SECURE_SSL_REDIRECT='maybe' is not a boolean", id="redirect"),
        pytest.param({"EDM_THROTTLE_LOGIN": "10"}, "EDM_THROTTLE_LOGIN='10' is not a rate", id="rate"),
        pytest.param({"EDM_NUM_PROXIES": "-1"}, "EDM_NUM_PROXIES=-1 is below the minimum of 0", id="proxies"),
        pytest.param({"EDM_METRICS_USER": "prometheus"}, "EDM_METRICS_USER and EDM_METRICS_PASSWORD", id="half-basic"),
    ],
)
def test_a_bad_value_stops_the_process_naming_the_variable(tmp_path, env, message):
    result = load(production_env(tmp_path, **env))
    assert result.returncode == 1
    assert message in result.stderr.strip().splitlines()[-1]


# --- what the settings do to requests ------------------------------------------

PROXIED_HTTPS = {"HTTP_X_FORWARDED_PROTO": "https"}


@override_settings(SECURE_SSL_REDIRECT=True)
def test_plain_http_is_redirected_to_https_except_health_and_metrics(db):
    client = Client()
    redirected = client.get("/api/tasks/?page=2")
    assert (redirected.status_code, redirected["Location"]) == (301, "https://testserver/api/tasks/?page=2")
    assert client.get("/admin/login/").status_code == 301
    # The compose network's health checks and Prometheus speak plain http to the containers.
    assert client.get("/api/monitoring/system-health").status_code == 200
    assert client.get("/metrics", **METRICS_AUTH).status_code == 200


@override_settings(SECURE_SSL_REDIRECT=True)
def test_a_request_the_proxy_marks_https_is_served_with_hsts(db):
    response = Client().get("/admin/login/", **PROXIED_HTTPS)
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert Client().get("/admin/login/", HTTP_X_FORWARDED_PROTO="http").status_code == 301
