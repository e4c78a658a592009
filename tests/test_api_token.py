"""Integrators get a token with their username and password, then call the API with it."""

from __future__ import annotations

from rest_framework.test import APIClient


def test_a_token_for_valid_credentials_works_on_the_api(django_user_model):
    django_user_model.objects.create_user("integrator", "i@example.com", "s3cret-pass")
    api = APIClient()

    response = api.post("/api/auth/token/", {"username": "integrator", "password": "s3cret-pass"}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]

    assert api.get("/api/tasks/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    assert api.get("/api/tasks/", HTTP_AUTHORIZATION="Token not-a-token").status_code == 401


def test_wrong_credentials_give_a_400_without_a_token(django_user_model):
    django_user_model.objects.create_user("integrator", "i@example.com", "s3cret-pass")
    response = APIClient().post("/api/auth/token/", {"username": "integrator", "password": "nope"}, format="json")
    assert response.status_code == 400
    assert "token" not in response.json()
    assert "Unable to log in" in response.json()["detail"]


def test_the_docs_pages_serve_their_scripts_locally(client):
    for page in ("/api/docs/", "/api/redoc/"):
        response = client.get(page)
        assert response.status_code == 200
        html = response.content.decode()
        assert "cdn.jsdelivr.net" not in html
        assert "/static/drf_spectacular_sidecar/" in html
    assert client.get("/api/schema/").status_code == 200
