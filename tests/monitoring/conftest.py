from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import AlertFactory, SendAttemptFactory, UserFactory, WorkerHeartbeatFactory


@pytest.fixture
def alert_factory(db):
    return AlertFactory


@pytest.fixture
def heartbeat_factory(db):
    return WorkerHeartbeatFactory


@pytest.fixture
def send_attempt_factory(db):
    return SendAttemptFactory


@pytest.fixture
def staff(db):
    return UserFactory(username="operator", is_staff=True)


@pytest.fixture
def api(db):
    """An API client; ``api.as_user(user)`` authenticates it (None: anonymous)."""
    client = APIClient()

    def as_user(user):
        client.force_authenticate(user)
        return client

    client.as_user = as_user
    return client
