"""Every API view parses JSON with the size limit and the nesting guard."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from config.models import ConfigItem


@pytest.fixture
def staff_api(admin_user):
    api = APIClient()
    api.force_authenticate(admin_user)
    return api


def test_a_deeply_nested_body_is_a_400(staff_api):
    response = staff_api.generic(
        "PUT", "/api/config/queue/max_retries/", '{"value": ' + "[" * 100_000, content_type="application/json"
    )
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]
    assert not ConfigItem.objects.exists()


def test_a_body_over_the_limit_is_a_413(staff_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = '{"value": "' + "x" * 2000 + '"}'
    response = staff_api.generic("PUT", "/api/config/queue/quota_timezone/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["detail"] == "request body too large"
    assert not ConfigItem.objects.exists()
