"""The Prometheus alert rules shipped with the stack: valid, loaded, unit-tested, on real metric names.

promtool (Debian's prometheus package) checks the config and the rules and
runs docker/prometheus/alerts_test.yml; a missing promtool is installed with
the Makefile's rule, as ``make test`` does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from config.registry import get_setting
from queues.maintenance import SWEEPS
from tests.deploy.compose import COMPOSE_FILE, DOCKER, ROOT, interpolate, required_variables
from tests.deploy.test_compose import promql_metric_names

PROMETHEUS_DIR = DOCKER / "prometheus"
CONFIG_FILE = PROMETHEUS_DIR / "prometheus.yml"
RULES_FILE = PROMETHEUS_DIR / "alerts.yml"
RULES_TEST_FILE = PROMETHEUS_DIR / "alerts_test.yml"
PROMTOOL = Path(os.environ.get("PROMTOOL_PATH", "/usr/bin/promtool"))


@pytest.fixture(scope="module")
def promtool() -> Path:
    if not PROMTOOL.exists():
        subprocess.run(["make", f"PROMTOOL={PROMTOOL}", str(PROMTOOL)], cwd=ROOT, check=False, timeout=600)
    if not PROMTOOL.exists():
        pytest.fail(
            f"{PROMTOOL} is missing and could not be installed: apt-get install prometheus, or set PROMTOOL_PATH"
        )
    return PROMTOOL


def run(promtool: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=120, check=False)


def rules() -> dict[str, dict]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def thresholds(expr: str, metric: str) -> list[float]:
    """The numbers ``<metric ...> > N`` / ``>= N`` compares with (a product like ``3 * 3600`` multiplied out)."""
    found = []
    pattern = rf"{metric}(?!\w)[^>]*?>=?\s*([\d.]+(?:\s*\*\s*[\d.]+)*)"
    for match in re.finditer(pattern, expr):
        value = 1.0
        for factor in match.group(1).split("*"):
            value *= float(factor)
        found.append(value)
    return found


def test_promtool_checks_the_config_and_its_rules(promtool, tmp_path):
    # The scrape token is a compose secret, a file only inside the container: promtool checks that
    # it exists, so the config is checked as a copy (next to its rules) that names a file here.
    token = tmp_path / "metrics_token"
    token.write_text("token\n")
    config_text = CONFIG_FILE.read_text()
    assert "/run/secrets/metrics_token" in config_text
    checked_config = tmp_path / CONFIG_FILE.name
    checked_config.write_text(config_text.replace("/run/secrets/metrics_token", str(token)))
    (tmp_path / RULES_FILE.name).write_text(RULES_FILE.read_text())
    config = run(promtool, "check", "config", str(checked_config))
    assert config.returncode == 0, config.stdout + config.stderr
    assert f"SUCCESS: {len(rules())} rules found" in config.stdout
    checked = run(promtool, "check", "rules", str(RULES_FILE))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_unit_tests_pass(promtool):
    result = run(promtool, "test", "rules", str(RULES_TEST_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_a_case_that_fires_and_one_that_does_not():
    cases = [case for test in yaml.safe_load(RULES_TEST_FILE.read_text())["tests"] for case in test["alert_rule_test"]]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert fires == set(rules())
    assert quiet == set(rules())


def test_the_rule_tests_catch_a_changed_threshold(promtool, tmp_path):
    for path in (RULES_FILE, RULES_TEST_FILE):
        shutil.copy(path, tmp_path / path.name)
    text = RULES_FILE.read_text()
    changed = text.replace("max(edm_oldest_waiting_task_seconds) > 300", "max(edm_oldest_waiting_task_seconds) > 900")
    assert changed != text
    (tmp_path / RULES_FILE.name).write_text(changed)

    result = run(promtool, "test", "rules", str(tmp_path / RULES_TEST_FILE.name))

    assert result.returncode == 1
    assert "alertname: EdmFirstSendWaitWarning, time: 6m" in result.stdout + result.stderr


def test_prometheus_loads_the_rules_where_compose_mounts_them():
    config = yaml.safe_load(CONFIG_FILE.read_text())
    assert config["rule_files"] == [RULES_FILE.name]
    env = dict.fromkeys(required_variables(COMPOSE_FILE.read_text()), "x")
    prometheus = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env)["services"]["prometheus"]
    mounts = dict(tuple(volume.split(":")[:2]) for volume in prometheus["volumes"])
    config_target = mounts[f"./{CONFIG_FILE.relative_to(DOCKER)}"]
    # rule_files are relative to the config file's directory, in the container as here.
    assert mounts[f"./{RULES_FILE.relative_to(DOCKER)}"] == str(Path(config_target).parent / RULES_FILE.name)


def test_thresholds_are_the_configuration_defaults():
    by_name = rules()
    for severity in ("warning", "critical", "emergency"):
        expr = by_name[f"EdmFirstSendWait{severity.capitalize()}"]["expr"]
        assert thresholds(expr, "edm_oldest_waiting_task_seconds") == [
            get_setting("alerts", f"{severity}_seconds").default
        ]
        assert by_name[f"EdmFirstSendWait{severity.capitalize()}"]["labels"]["severity"] == severity
    min_sample = get_setting("reputation", "min_sample").default
    bounce = by_name["EdmServiceHardBounceRateHigh"]["expr"]
    assert thresholds(bounce, "edm_reputation_hard_bounce_rate") == [
        get_setting("reputation", "hard_bounce_rate_limit").default
    ]
    assert thresholds(bounce, "edm_reputation_answered") == [min_sample]
    complaint = by_name["EdmServiceComplaintRateHigh"]["expr"]
    assert thresholds(complaint, "edm_reputation_complaint_rate") == [
        get_setting("reputation", "complaint_rate_limit").default
    ]
    assert thresholds(complaint, "edm_reputation_delivered") == [min_sample]


def test_a_sweep_is_stalled_only_after_missing_several_of_its_runs(db):
    expr = rules()["EdmMaintenanceSweepStalled"]["expr"]
    (others,) = thresholds(expr, r'edm_sweep_last_finished_timestamp_seconds\{sweep!="prune"\}\)')
    (prune,) = thresholds(expr, r'edm_sweep_last_finished_timestamp_seconds\{sweep="prune"\}\)')
    for name, sweep in SWEEPS.items():
        assert (prune if name == "prune" else others) >= 3 * sweep.interval, name


@pytest.fixture
def exported_families(client) -> set[str]:
    """Every sample name the web's /metrics and a scheduler's registry can expose (labelled ones included)."""
    from prometheus_client import generate_latest

    from queues.metrics import SCHEDULER_REGISTRY
    from tests.metrics_auth import METRICS_AUTH

    response = client.get("/metrics", **METRICS_AUTH)
    assert response.status_code == 200
    text = response.content.decode() + generate_latest(SCHEDULER_REGISTRY).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


@pytest.mark.django_db
def test_every_rule_queries_metrics_the_project_exports(exported_families):
    used = set().union(*(promql_metric_names(rule["expr"]) for rule in rules().values()))
    assert used - exported_families == set()
    assert {
        "edm_queue_due_subtasks",
        "edm_service_sent_total",
        "edm_service_failed_total",
        "edm_live_schedulers",
        "edm_sweep_last_finished_timestamp_seconds",
        "edm_oldest_waiting_task_seconds",
        "edm_reputation_hard_bounce_rate",
    } <= used
