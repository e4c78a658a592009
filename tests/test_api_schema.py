"""The published schema: every error answer documented with the error body, strict request bodies."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from tests.api_helpers import client_for


@pytest.fixture
def schema(db) -> dict:
    return APIClient().get("/api/schema/", {"format": "json"}).json()


def _operations(schema: dict):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def test_every_error_response_has_the_json_error_body(schema):
    error = {"$ref": "#/components/schemas/Error"}
    for name, operation in _operations(schema):
        for code, response in operation["responses"].items():
            if code.startswith(("4", "5")) and code != "503":
                assert response["content"]["application/json"]["schema"] == error, (name, code)
    assert schema["components"]["schemas"]["Error"]["required"] == ["detail"]


@pytest.mark.parametrize(
    ("operation", "codes"),
    [
        # Every view is throttled (EDM_THROTTLE_USER / EDM_THROTTLE_ANON): 429 everywhere.
        pytest.param("POST /api/tasks/", {"201", "400", "401", "403", "413", "415", "429"}, id="create"),
        pytest.param("GET /api/tasks/", {"200", "400", "401", "404", "429"}, id="list"),
        pytest.param("POST /api/tasks/{id}/pause/", {"200", "401", "403", "404", "409", "429"}, id="state-action"),
        pytest.param(
            "PUT /api/services/{id}/", {"200", "400", "401", "403", "404", "413", "415", "429"}, id="staff-replace"
        ),
        pytest.param("GET /api/monitoring/system-health", {"200", "429", "503"}, id="no-authentication"),
        pytest.param("POST /api/auth/token/", {"200", "400", "401", "403", "413", "415", "429"}, id="login"),
    ],
)
def test_documented_status_codes_are_those_the_operation_can_answer(schema, operation, codes):
    method, path = operation.split(" ")
    assert set(schema["paths"][path][method.lower()]["responses"]) == codes


def test_request_bodies_refuse_other_properties_and_a_put_requires_every_writable_field(schema):
    components = schema["components"]["schemas"]
    for name, component in components.items():
        if name.endswith("Request"):
            assert component.get("additionalProperties") is False, name
    replace = components["EmailServiceReplaceRequest"]
    assert set(replace["required"]) == set(replace["properties"]) - {"password", "backend_options"}
    assert "is_enabled" not in replace["properties"]
    assert "is_enabled" in components["EmailServiceRequest"]["properties"]
    assert "required" not in components["PatchedEmailServiceRequest"]


def test_put_and_patch_say_how_they_differ(schema):
    service = schema["paths"]["/api/services/{id}/"]
    assert "every writable field must be given" in service["put"]["description"]
    assert "PATCH changes only the fields it holds" in service["patch"]["description"]


def test_reply_to_is_an_address_or_blank_in_both_directions(schema):
    components = schema["components"]["schemas"]
    for name in ("TaskCreateRequest", "Task"):
        assert components[name]["properties"]["reply_to"]["anyOf"] == [{"format": "email"}, {"maxLength": 0}]


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_the_docs_pages_load_nothing_from_other_hosts(user, page):
    html = client_for(user).get(page).content.decode()

    assert re.findall(r"https?://", html) == []
    assert "/static/drf_spectacular_sidecar/" in html
