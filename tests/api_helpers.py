"""Small helpers shared by the REST API tests."""

from __future__ import annotations

from rest_framework.test import APIClient


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client
