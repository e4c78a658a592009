"""Property-based requests generated from the OpenAPI schema: no input may cause a 5xx.

Every operation of /api/schema/ gets generated requests (valid and invalid
bodies, query strings and path ids) as a staff user with a token, in this
process through the WSGI application; the only check is "not a server error".
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

from edm.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    # Django's test client does the same: the WSGI handler would otherwise close
    # the test's database connection at the end of every request.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(django_user_model) -> str:
    staff = django_user_model.objects.create_user("fuzz", "fuzz@example.com", "pw", is_staff=True)
    return Token.objects.create(user=staff).key


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_generated_request_causes_a_server_error(case, token):
    case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=[not_a_server_error])
