"""Only a scraper with the metrics credentials reads /metrics and the schedulers' metrics ports."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request

import pytest
from django.test import Client, override_settings

from tests.metrics_auth import METRICS_AUTH, METRICS_HEADERS, METRICS_TOKEN
from tests.schedulers import wait_until
from tests.web import free_port


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="none"),
        pytest.param("Bearer wrong-token", id="wrong-token"),
        pytest.param(f"Bearer {METRICS_TOKEN}x", id="token-with-extra"),
        pytest.param(f"Token {METRICS_TOKEN}", id="api-token-scheme"),
        pytest.param(basic("prometheus", METRICS_TOKEN), id="basic-not-configured"),
        pytest.param("Basic !!!not-base64", id="basic-garbage"),
    ],
)
def test_metrics_without_the_right_credentials_is_401_with_a_challenge(db, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = Client().get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"edm_" not in response.content


def test_metrics_with_the_token_is_200(db):
    response = Client().get("/metrics", **METRICS_AUTH)
    assert response.status_code == 200
    assert "edm_queue_metrics_up 1.0" in response.content.decode().splitlines()


@override_settings(EDM_METRICS_TOKEN=None, EDM_METRICS_USER="prometheus", EDM_METRICS_PASSWORD="scrape-pass")
@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        pytest.param(basic("prometheus", "scrape-pass"), 200, id="right"),
        pytest.param(basic("prometheus", "wrong"), 401, id="wrong-password"),
        pytest.param(basic("grafana", "scrape-pass"), 401, id="wrong-user"),
        pytest.param(f"Bearer {METRICS_TOKEN}", 401, id="token-not-configured"),
    ],
)
def test_metrics_with_basic_auth(db, authorization, status):
    response = Client().get("/metrics", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == status
    if status == 401:
        assert response["WWW-Authenticate"] == 'Basic realm="metrics", charset="UTF-8"'


@override_settings(EDM_METRICS_USER="prometheus", EDM_METRICS_PASSWORD="scrape-pass")
def test_with_both_configured_either_credential_works(db):
    assert Client().get("/metrics", **METRICS_AUTH).status_code == 200
    assert Client().get("/metrics", HTTP_AUTHORIZATION=basic("prometheus", "scrape-pass")).status_code == 200
    challenge = Client().get("/metrics")["WWW-Authenticate"]
    assert challenge == 'Basic realm="metrics", charset="UTF-8", Bearer realm="metrics"'


@override_settings(EDM_METRICS_TOKEN=None, DEBUG=False)
def test_without_credentials_configured_production_refuses_with_a_hint(db):
    response = Client().get("/metrics", **METRICS_AUTH)
    assert response.status_code == 403
    assert "set EDM_METRICS_TOKEN" in response.content.decode()
    assert b"edm_" not in response.content


@override_settings(EDM_METRICS_TOKEN=None, DEBUG=True)
def test_without_credentials_configured_debug_serves_the_metrics(db):
    assert Client().get("/metrics").status_code == 200


# --- the scheduler's metrics port, in a real run_scheduler process -------------


def scrape(port: int, headers: dict[str, str]) -> tuple[int, str, str | None]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(), None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers.get("WWW-Authenticate")


def serving(port: int) -> bool:
    try:
        scrape(port, {})
    except (urllib.error.URLError, ConnectionError):
        return False
    return True


@pytest.mark.django_db(transaction=True)
def test_run_scheduler_metrics_port_needs_the_credentials(schedulers):
    port = free_port()
    schedulers.start_one("--metrics-port", str(port), "--maintenance", "off")
    wait_until(lambda: serving(port), timeout=30, what="the metrics port")

    assert scrape(port, {}) == (401, "metrics need credentials: " + _HOW + "\n", 'Bearer realm="metrics"')
    assert scrape(port, {"Authorization": "Bearer wrong-token"})[0] == 401
    status, text, _ = scrape(port, METRICS_HEADERS)
    assert status == 200
    assert "edm_claim_seconds" in text
    assert schedulers.terminate() == [0]


@pytest.mark.django_db(transaction=True)
def test_run_scheduler_metrics_port_without_credentials_refuses_outside_debug(schedulers):
    port = free_port()
    schedulers.start_one("--metrics-port", str(port), "--maintenance", "off", env={"EDM_METRICS_TOKEN": ""})
    wait_until(lambda: serving(port), timeout=30, what="the metrics port")

    status, text, _ = scrape(port, METRICS_HEADERS)
    assert status == 403
    assert "set EDM_METRICS_TOKEN" in text
    assert schedulers.terminate() == [0]


_HOW = "Authorization: Bearer <EDM_METRICS_TOKEN> or basic auth"
