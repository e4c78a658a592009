"""``manage.py check --deploy`` warns when unsubscribe links could not work for recipients."""

from __future__ import annotations

import pytest
from django.core import checks


@pytest.mark.parametrize(
    ("url", "ids"),
    [
        pytest.param("http://127.0.0.1:8000", ["deliverability.W001"], id="local-demo-default"),
        pytest.param("https://localhost", ["deliverability.W001"], id="localhost"),
        pytest.param("http://mail.example.com", ["deliverability.W002"], id="plain-http"),
        pytest.param("https://mail.example.com/edm", [], id="public-https"),
    ],
)
def test_the_deploy_check_wants_a_public_https_url(settings, url, ids):
    settings.EDM_PUBLIC_URL = url
    found = checks.run_checks(include_deployment_checks=True, tags=[checks.Tags.security])
    assert [m.id for m in found if m.id.startswith("deliverability.")] == ids


def test_the_ordinary_checks_say_nothing_about_it(settings):
    settings.EDM_PUBLIC_URL = "http://127.0.0.1:8000"
    assert [m.id for m in checks.run_checks() if m.id.startswith("deliverability.")] == []
