"""Throttles: failed logins at /api/auth/token/ per address and username, and the whole API per user and address."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
import requests
from django.test import override_settings
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from edm.env import env_rate
from tests.web import free_port, gunicorn

TOKEN_URL = "/api/auth/token/"
PASSWORD = "s3cret-pass"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")


def unique(prefix: str) -> str:
    """Names and addresses no other test (or earlier run sharing Redis) has counted against."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def client_at(address: str) -> APIClient:
    return APIClient(REMOTE_ADDR=address)


def login(api: APIClient, username: str, password: str):
    return api.post(TOKEN_URL, {"username": username, "password": password}, format="json")


@pytest.fixture
def unreachable_redis() -> str:
    """A Redis URL on a local port nothing listens on (connections are refused at once)."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def integrator(django_user_model):
    return django_user_model.objects.create_user(unique("integrator"), "i@example.com", PASSWORD)


def test_the_11th_bad_login_within_the_window_is_429_with_retry_after(integrator):
    api = client_at("203.0.113.10")
    statuses = [login(api, integrator.username, f"guess-{n}").status_code for n in range(10)]
    assert statuses == [400] * 10

    refused = login(api, integrator.username, "guess-10")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json() == {
        "detail": "Too many failed logins from this address for this username. "
        f"Expected available in {int(refused['Retry-After'])} seconds."
    }
    # Locked out: the right password does not get through either (else guessing would go on).
    assert login(api, integrator.username, PASSWORD).status_code == 429


def test_the_lockout_is_per_address_and_username(integrator, django_user_model):
    other = django_user_model.objects.create_user(unique("other"), "o@example.com", PASSWORD)
    attacker = client_at("203.0.113.20")
    for n in range(11):
        login(attacker, integrator.username, f"guess-{n}")
    assert login(attacker, integrator.username, PASSWORD).status_code == 429

    assert login(client_at("203.0.113.21"), integrator.username, PASSWORD).status_code == 200
    assert login(attacker, other.username, PASSWORD).status_code == 200


def test_good_logins_never_count_against_the_limit(integrator):
    api = client_at("203.0.113.30")
    assert [login(api, integrator.username, PASSWORD).status_code for _ in range(25)] == [200] * 25
    # Nine failures after all those successes: still allowed, the tenth too; the eleventh is not.
    assert [login(api, integrator.username, "wrong").status_code for _ in range(10)] == [400] * 10
    assert login(api, integrator.username, "wrong").status_code == 429


def test_a_good_login_between_failures_is_not_a_failure(integrator):
    api = client_at("203.0.113.40")
    for _ in range(9):
        login(api, integrator.username, "wrong")
    assert login(api, integrator.username, PASSWORD).status_code == 200
    assert login(api, integrator.username, "wrong").status_code == 400  # the 10th failure
    assert login(api, integrator.username, "wrong").status_code == 429


def test_the_window_passes_and_logins_are_allowed_again(integrator, settings):
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "login": "2/s"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    api = client_at("203.0.113.50")
    assert [login(api, integrator.username, "wrong").status_code for _ in range(3)] == [400, 400, 429]
    time.sleep(1.1)
    assert login(api, integrator.username, PASSWORD).status_code == 200


def test_the_api_rate_per_user_gives_429_with_retry_after(user, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"user": "3/min", "anon": "3/min"}}
    api = APIClient()
    api.force_authenticate(user)
    assert [api.get("/api/tasks/").status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = api.get("/api/tasks/")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json()["detail"].startswith("Request was throttled.")


def test_the_default_rates(settings):
    rates = api_settings.DEFAULT_THROTTLE_RATES
    assert (rates["login"], rates["user"], rates["anon"]) == ("10/min", "6000/min", "600/min")
    assert api_settings.NUM_PROXIES == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("20/min", "20/min", id="per-minute"),
        pytest.param("5/s", "5/s", id="per-second"),
        pytest.param("100/hour", "100/hour", id="per-hour"),
        pytest.param("off", None, id="off"),
    ],
)
def test_rates_from_the_environment(value, expected):
    assert env_rate("EDM_THROTTLE_LOGIN", "10/min", environ={"EDM_THROTTLE_LOGIN": value}) == expected


@pytest.mark.parametrize("value", ["10", "ten/min", "10/fortnight", "0/min", "-1/min"])
def test_a_malformed_rate_names_the_variable(value):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=r"^EDM_THROTTLE_USER=.* is not a rate"):
        env_rate("EDM_THROTTLE_USER", "6000/min", environ={"EDM_THROTTLE_USER": value})


@pytest.mark.django_db(transaction=True)
def test_behind_one_proxy_the_client_is_the_forwarded_address(integrator, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = "10.0.0.2"
    attacker = APIClient(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="198.51.100.7")
    for n in range(11):
        login(attacker, integrator.username, f"guess-{n}")
    assert login(attacker, integrator.username, PASSWORD).status_code == 429
    # Another client behind the same proxy is not locked out with the attacker.
    neighbour = APIClient(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="198.51.100.8")
    assert login(neighbour, integrator.username, PASSWORD).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_failed_logins_are_counted_across_processes_through_redis(integrator, tmp_path: Path):
    """Two gunicorn workers and this process share one count when the cache is Redis."""
    redis_cache = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ["EDM_TEST_CACHE_PREFIX"],
        }
    }
    with (
        override_settings(CACHES=redis_cache),
        gunicorn(tmp_path / "gunicorn.log", workers=2, env={"REDIS_URL": REDIS_URL}) as (base_url, _),
    ):
        body = {"username": integrator.username, "password": "wrong"}
        over_http = [requests.post(base_url + TOKEN_URL, json=body, timeout=30).status_code for _ in range(6)]
        here = [login(client_at("127.0.0.1"), integrator.username, "wrong").status_code for _ in range(4)]
        assert over_http + here == [400] * 10

        refused = requests.post(base_url + TOKEN_URL, json=body, timeout=30)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert login(client_at("127.0.0.1"), integrator.username, PASSWORD).status_code == 429


def test_an_unreachable_cache_lets_requests_through(integrator, unreachable_redis):
    """A Redis outage must not take the API down: no 500, logins and API calls are served unthrottled."""
    down = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": unreachable_redis}}
    with override_settings(CACHES=down):
        api = client_at("203.0.113.60")
        assert [login(api, integrator.username, "wrong").status_code for _ in range(12)] == [400] * 12
        token = login(api, integrator.username, PASSWORD)
        assert token.status_code == 200
        assert api.get("/api/tasks/", HTTP_AUTHORIZATION=f"Token {token.json()['token']}").status_code == 200
