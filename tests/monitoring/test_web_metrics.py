"""/metrics under gunicorn: every worker's requests in every scrape, and the queue's figures with them."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.metrics_auth import METRICS_HEADERS
from tests.web import gunicorn

pytestmark = pytest.mark.django_db(transaction=True)

HEALTH = "/api/monitoring/system-health"
HEALTH_RESPONSES = re.compile(
    r"^django_http_responses_total_by_status_view_method_total"
    r'\{method="GET",status="200",view="system-health"\} (\S+)$',
    re.M,
)


def test_each_scrape_counts_the_requests_of_every_worker(tmp_path):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    (shared / "counter_4242.db").write_bytes(b"left over from an earlier run")  # unreadable: must be wiped
    access_log = tmp_path / "access.log"
    extra = ("--access-logfile", str(access_log), "--access-logformat", "%(p)s %(U)s")

    with gunicorn(tmp_path / "gunicorn.log", workers=3, env={"PROMETHEUS_MULTIPROC_DIR": str(shared)}, extra=extra) as (
        base_url,
        _,
    ):
        # Six at once against three sync workers: each worker serves some.
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda _: requests.get(base_url + HEALTH, timeout=30).status_code, range(60)))
        assert codes == [200] * 60
        workers = {line.split()[0] for line in access_log.read_text().splitlines() if "system-health" in line}
        assert len(workers) >= 2, workers

        for _ in range(6):  # whichever worker answers the scrape
            page = requests.get(f"{base_url}/metrics", headers=METRICS_HEADERS, timeout=30)
            assert page.status_code == 200
            assert [float(n) for n in HEALTH_RESPONSES.findall(page.text)] == [60.0]
            assert "edm_queue_metrics_up 1.0" in page.text.splitlines()
            assert any(line.startswith("edm_sweep_runs_total{") for line in page.text.splitlines())

    assert not (shared / "counter_4242.db").exists()
    assert shared.is_dir()  # the operator's directory stays


def test_without_a_directory_a_temporary_one_is_used_and_removed(tmp_path):
    log_path = tmp_path / "gunicorn.log"
    with gunicorn(log_path, workers=2) as (base_url, _):
        assert requests.get(f"{base_url}/metrics", headers=METRICS_HEADERS, timeout=30).status_code == 200
        (directory,) = re.findall(r"Prometheus multiprocess directory: (\S+)", log_path.read_text())
        assert any(name.endswith(".db") for name in os.listdir(directory))
    assert not os.path.exists(directory)
