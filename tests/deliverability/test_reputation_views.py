"""Where the rates are shown: the API (own figures; staff: per service), the dashboard, /metrics."""

from __future__ import annotations

import pytest
from django.test import Client

from deliverability.models import OwnerReputationHour, ServiceReputationHour
from queues.maintenance import run_sweep
from tests.api_helpers import client_for
from tests.deliverability.test_reputation import complaint, hours
from tests.metrics_auth import METRICS_AUTH

pytestmark = pytest.mark.django_db

URL = "/api/deliverability/reputation/"


@pytest.fixture
def figures(email_service_factory, user_factory):
    """Two services and two owners: one each over the hard-bounce limit."""
    bad, good = email_service_factory(name="relay-bad"), email_service_factory(name="relay-good")
    sloppy, careful = user_factory(username="sloppy"), user_factory(username="careful")
    hours(ServiceReputationHour, bad, [(0, 100, 70, 30)])
    hours(ServiceReputationHour, good, [(2, 200, 200, 0)])
    hours(OwnerReputationHour, sloppy, [(0, 100, 70, 30)])
    hours(OwnerReputationHour, careful, [(2, 200, 200, 0)])
    complaint(careful, good, "x@y.example")
    return {"bad": bad, "good": good, "sloppy": sloppy, "careful": careful}


def test_an_owner_sees_only_their_own_rates(figures):
    response = client_for(figures["careful"]).get(URL)

    assert response.status_code == 200
    body = response.json()
    assert body["window_hours"] == 24
    assert body["limits"] == {"hard_bounce_rate": 0.1, "complaint_rate": 0.003, "min_sample": 50}
    assert body["owner"] == {
        "answered": 200,
        "sent": 200,
        "hard_bounces": 0,
        "hard_bounce_rate": 0.0,
        "complaints": 1,
        "complaint_rate": 0.005,
        "policy_rejections": 0,
        "over_limits": ["complaint"],
    }
    assert "services" not in body and "owners_over_limit" not in body


def test_an_owner_without_mail_gets_zeros(user):
    body = client_for(user).get(URL).json()
    assert body["owner"]["answered"] == 0
    assert body["owner"]["hard_bounce_rate"] is None
    assert body["owner"]["over_limits"] == []


def test_staff_also_see_every_service_and_the_owners_past_a_limit(figures, user_factory):
    staff = user_factory(username="ops", is_staff=True)

    body = client_for(staff).get(URL, {"window_hours": 1}).json()  # the current hour only

    assert body["window_hours"] == 1
    assert [(s["name"], s["answered"], s["hard_bounce_rate"], s["over_limits"]) for s in body["services"]] == [
        ("relay-bad", 100, 0.3, ["hard_bounce"]),
        ("relay-good", 0, None, []),  # its mail is older than the hour; its complaint is not
    ]
    assert [(o["username"], o["over_limits"]) for o in body["owners_over_limit"]] == [("sloppy", ["hard_bounce"])]


@pytest.mark.parametrize("value", ["0", "169", "day", "1.5"], ids=["zero", "over-a-week", "text", "fraction"])
def test_a_bad_window_is_a_400(user, value):
    response = client_for(user).get(URL, {"window_hours": value})
    assert response.status_code == 400
    assert "window_hours" in response.json()["errors"]


def test_anonymous_callers_get_nothing(figures):
    assert Client().get(URL).status_code in (401, 403)


def test_the_dashboard_shows_the_rates_per_service_and_the_owners_past_a_limit(client, figures, user_factory):
    client.force_login(user_factory(username="ops", is_staff=True, is_superuser=True))

    page = client.get("/admin/dashboard/").content.decode()

    section = page[page.index('id="reputation"') :]
    assert "Bounces and complaints, last 24 h" in section
    bad_row = section[section.index(f'data-reputation-service="{figures["bad"].pk}"') :]
    assert "<td>relay-bad</td>" in bad_row[:400] and "30.0 %" in bad_row[:400] and "hard_bounce" in bad_row[:600]
    assert "Owners over a limit (2)" in section  # sloppy bounces, careful's one complaint is 0.5 %
    for name, limit in (("sloppy", "hard_bounce"), ("careful", "complaint")):
        row = section[section.index(f'data-reputation-owner="{figures[name].pk}"') :]
        assert f"<td>{name}</td>" in row[:200] and f'<td class="severity-warning">{limit}</td>' in row[:800]


def test_metrics_show_each_services_rates_and_how_many_owners_are_past_a_limit(figures):
    run_sweep("reputation_check", force=True)

    text = Client().get("/metrics", **METRICS_AUTH).content.decode()

    for line in [
        'edm_reputation_answered{service="relay-bad"} 100.0',
        'edm_reputation_delivered{service="relay-bad"} 70.0',
        'edm_reputation_hard_bounce_rate{service="relay-bad"} 0.3',
        'edm_reputation_complaint_rate{service="relay-bad"} 0.0',
        'edm_reputation_hard_bounce_rate{service="relay-good"} 0.0',
        'edm_reputation_complaint_rate{service="relay-good"} 0.005',
        'edm_reputation_owners_over_limit{limit="hard_bounce"} 1.0',
        'edm_reputation_owners_over_limit{limit="complaint"} 1.0',
    ]:
        assert line in text, line
    assert "sloppy" not in text and str(figures["sloppy"].pk) not in text  # no series per owner
