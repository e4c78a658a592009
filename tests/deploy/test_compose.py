"""The production stack's files (docker/) agree with each other and with the code.

No Docker engine is needed: the compose file is parsed with PyYAML and its
``${VAR}`` references are resolved here the way Compose resolves them. Every
name the files use (management commands and their options, the Celery app and
beat scheduler, URLs, metric names, services, ports, volumes) is checked
against what the project really has, so renaming one side fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, get_commands, load_command_class
from django.urls import Resolver404, resolve

from tests.deploy.compose import COMPOSE_FILE, DOCKER, ROOT, MissingVariable, interpolate
from tests.metrics_auth import METRICS_AUTH

PROMETHEUS_FILE = DOCKER / "prometheus" / "prometheus.yml"
DASHBOARD_FILE = DOCKER / "grafana" / "dashboards" / "edm.json"
DATASOURCE_FILE = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER_FILE = DOCKER / "grafana" / "provisioning" / "dashboards" / "edm.yml"

# What an operator puts in docker/.env; nothing else is needed to start the stack.
ENV = {
    "SECRET_KEY": "s3cret-for-tests",
    "EDM_FIELD_KEYS": "dGVzdHMtb25seS1jb21wb3NlLWZpZWxkLWtleS0wMDA=",
    "POSTGRES_PASSWORD": "pgpass",
    "GRAFANA_ADMIN_PASSWORD": "grafpass",
    "EDM_METRICS_TOKEN": "metrics-token-for-tests",
}
APP_SERVICES = {"migrate", "web", "scheduler", "celery-worker", "celery-beat"}
LONG_RUNNING = APP_SERVICES - {"migrate"}
SERVICES = APP_SERVICES | {"postgres", "redis", "prometheus", "grafana"}
HEALTH_VIEW = "SystemHealthView"

# The web application is loaded without collectstatic's output; WhiteNoise warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

RAW = yaml.safe_load(COMPOSE_FILE.read_text())
COMPOSE = interpolate(RAW, ENV)
SERVICE = COMPOSE["services"]


def environment(service: str) -> dict[str, str]:
    env = SERVICE[service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command_lines(value: Any) -> Iterator[list[str]]:
    """Each program invocation in a command or healthcheck test (shell lines split on && ; ||)."""
    if value is None:
        return
    if isinstance(value, str):
        shell = value
    elif value[:1] in (["CMD-SHELL"], ["sh"]) or value[:2] == ["sh", "-c"]:
        shell = value[-1]
    else:
        argv = value[1:] if value[0] == "CMD" else value
        yield list(argv)
        return
    for part in re.split(r"&&|\|\||;", shell):
        if part.strip():
            yield shlex.split(part)


def invocations(service: str) -> list[list[str]]:
    spec = SERVICE[service]
    lines = list(command_lines(spec.get("command")))
    lines += list(command_lines(spec.get("healthcheck", {}).get("test")))
    return lines


def option(argv: list[str], name: str) -> str | None:
    """The value of ``--name=value`` / ``--name value`` / ``-A value`` in argv."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def manage_py_problems(argv: list[str]) -> list[str]:
    """Why ``python manage.py <command> <options>`` would not run ([] when it would)."""
    if argv[:2] != ["python", "manage.py"]:
        return []
    name, args = argv[2], argv[3:]
    commands = get_commands()
    if name not in commands:
        return [f"manage.py has no command {name!r}"]
    parser = load_command_class(commands[name], name).create_parser("manage.py", name)
    try:
        parser.parse_args(args)
    except CommandError as exc:
        return [f"manage.py {name}: {exc}"]
    return []


def celery_problems(argv: list[str]) -> list[str]:
    """Why ``celery -A <app> <subcommand>`` would not find its app or beat scheduler."""
    from celery.app.utils import find_app
    from kombu.utils.imports import symbol_by_name

    if argv[:1] != ["celery"]:
        return []
    problems = []
    app_name = option(argv, "-A") or option(argv, "--app")
    try:
        app = find_app(app_name)
    except (ImportError, AttributeError) as exc:
        return [f"celery -A {app_name}: {exc}"]
    if app.main != "edm":
        problems.append(f"celery -A {app_name} is the app {app.main!r}, not edm")
    subcommand = next((arg for arg in argv[1:] if arg in {"worker", "beat", "inspect"}), None)
    if subcommand is None:
        problems.append(f"celery subcommand not recognised in {argv}")
    scheduler = option(argv, "--scheduler") or option(argv, "-S")
    if scheduler:
        try:
            symbol_by_name(scheduler)
        except (ImportError, AttributeError) as exc:
            problems.append(f"beat scheduler {scheduler!r} does not import: {exc}")
    return problems


def container_ports(service: str) -> set[int]:
    spec = SERVICE[service]
    ports = {int(str(port).rsplit(":", 1)[-1].split("/")[0]) for port in spec.get("ports", [])}
    return ports | {int(port) for port in spec.get("expose", [])}


def mounts(service: str) -> list[tuple[str, str]]:
    return [tuple(volume.split(":")[:2]) for volume in SERVICE[service].get("volumes", [])]


def host_path(source: str) -> Path:
    return (COMPOSE_FILE.parent / source).resolve()


def url_parts(url: str) -> tuple[str, int, str]:
    match = re.fullmatch(r"https?://([^:/]+):(\d+)(/\S*)?", url)
    assert match, url
    return match.group(1), int(match.group(2)), match.group(3) or "/"


def view_name(path: str) -> str:
    func = resolve(path).func
    return getattr(func, "view_class", func).__name__


# --- services, image, environment -------------------------------------------


def test_every_service_is_there():
    assert set(SERVICE) == SERVICES


def test_app_services_run_the_image_built_from_the_dockerfile():
    for name in APP_SERVICES:
        spec = SERVICE[name]
        assert spec["image"] == "edm:current", name
        build = spec["build"]
        assert (host_path(build["context"]) / build["dockerfile"]) == DOCKER / "Dockerfile", name
        assert (DOCKER / "Dockerfile").is_file()
    for name in SERVICES - APP_SERVICES:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", SERVICE[name]["image"]), name
        assert "build" not in SERVICE[name], name


@pytest.mark.parametrize("variable", sorted(ENV))
def test_secrets_are_required_and_never_written_down(variable):
    with pytest.raises(MissingVariable, match=variable):
        interpolate(RAW, {key: value for key, value in ENV.items() if key != variable})
    text = COMPOSE_FILE.read_text()
    assert ENV[variable] not in text
    for name, spec in RAW["services"].items():
        for key, value in (spec.get("environment") or {}).items():
            if re.search(r"SECRET|PASSWORD|_KEYS$", key):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*|:-)?\}", str(value)), (name, key, value)


def test_app_environment_points_at_the_stack():
    from edm.env import env_database

    postgres = environment("postgres")
    for name in APP_SERVICES:
        env = environment(name)
        database = env_database("DATABASE_URL", "", environ=env)
        assert database["ENGINE"] == "django.db.backends.postgresql", name
        assert database["HOST"] in SERVICE and database["PORT"] in (5432, "5432", ""), name
        assert (database["NAME"], database["USER"], database["PASSWORD"]) == (
            postgres["POSTGRES_DB"],
            postgres["POSTGRES_USER"],
            ENV["POSTGRES_PASSWORD"],
        )
        host, port, _ = url_parts(env["REDIS_URL"].replace("redis://", "http://"))
        assert (host, port) == ("redis", 6379), name
        assert env["SECRET_KEY"] == ENV["SECRET_KEY"], name
        assert env["EDM_FIELD_KEYS"] == ENV["EDM_FIELD_KEYS"], name
        assert env["EDM_ALLOWED_BACKENDS"] == "django.core.mail.backends.smtp.EmailBackend,anymail.backends.*", name
        assert env["LOG_FORMAT"] == "json", name
        assert env["DEBUG"] == "0", name
        hosts = env["ALLOWED_HOSTS"].split(",")
        # Prometheus sends Host: web:8000, the health checks Host: 127.0.0.1:8000.
        assert {"web", "127.0.0.1"} <= set(hosts), name


def test_every_app_variable_is_one_the_settings_read():
    settings_source = (ROOT / "edm" / "settings.py").read_text()
    for name in APP_SERVICES:
        for key in environment(name):
            assert f'"{key}"' in settings_source, f"{name}: {key} is not read by edm/settings.py"


@pytest.mark.parametrize("service", sorted(LONG_RUNNING))
def test_settings_load_with_each_service_environment(service):
    env = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "edm.settings", **environment(service)}
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DATABASES['default']['ENGINE'], settings.CELERY_TASK_ALWAYS_EAGER, settings.DEBUG)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "False", "False"]


# --- commands ----------------------------------------------------------------


def test_every_manage_py_and_celery_invocation_names_what_exists():
    seen = set()
    for name in SERVICE:
        for argv in invocations(name):
            assert manage_py_problems(argv) == [], name
            assert celery_problems(argv) == [], name
            if argv[:2] == ["python", "manage.py"]:
                seen.add(argv[2])
            if argv[:1] == ["celery"]:
                seen.add(f"celery {next(a for a in argv[1:] if a in {'worker', 'beat', 'inspect'})}")
    assert seen == {
        "migrate",
        "setup_periodic_tasks",
        "run_scheduler",
        "celery worker",
        "celery beat",
        "celery inspect",
    }


def test_the_checks_catch_a_renamed_command_option_app_or_scheduler():
    assert manage_py_problems(["python", "manage.py", "run_schedulr"]) == ["manage.py has no command 'run_schedulr'"]
    (problem,) = manage_py_problems(["python", "manage.py", "run_scheduler", "--metric-port=9100"])
    assert "unrecognized arguments: --metric-port=9100" in problem
    assert celery_problems(["celery", "-A", "edm_nope", "worker"]) != []
    assert (
        celery_problems(["celery", "-A", "edm", "beat", "--scheduler=django_celery_beat.schedulers:DatabaseSchedulr"])
        != []
    )


def test_migrate_runs_migrations_then_installs_the_periodic_tasks():
    argvs = invocations("migrate")
    assert [argv[:3] for argv in argvs] == [
        ["python", "manage.py", "migrate"],
        ["python", "manage.py", "setup_periodic_tasks"],
    ]
    assert "--noinput" in argvs[0]
    assert SERVICE["migrate"]["restart"] == "no"


def test_scheduler_command_replicas_and_graceful_stop():
    (argv, health) = invocations("scheduler")
    assert argv[:3] == ["python", "manage.py", "run_scheduler"]
    assert int(option(argv, "--concurrency")) >= 1
    # Celery beat runs the sweeps; a scheduler running them too would only contend for their locks.
    assert option(argv, "--maintenance") == "off"
    metrics_port = int(option(argv, "--metrics-port"))
    assert metrics_port in container_ports("scheduler")
    assert f"127.0.0.1:{metrics_port}/metrics" in health[-1]
    spec = SERVICE["scheduler"]
    assert spec["deploy"]["replicas"] == 2
    assert "ports" not in spec and "container_name" not in spec  # replicas cannot share either
    assert spec["stop_signal"] == "SIGTERM"
    grace = int(spec["stop_grace_period"].removesuffix("s"))
    assert grace >= 3 * 10  # a send is bounded by three socket timeouts, 10 s by default
    deploy_default = re.search(r"GRACE=\$\{EDM_STOP_GRACE:-(\d+)\}", (DOCKER / "deploy.sh").read_text())
    assert int(deploy_default.group(1)) == grace


def test_celery_beat_uses_the_database_scheduler_of_the_settings():
    from django.conf import settings

    (argv,) = invocations("celery-beat")
    assert "beat" in argv
    assert option(argv, "--scheduler") == settings.CELERY_BEAT_SCHEDULER


def test_web_serves_the_wsgi_application_on_its_published_port():
    from kombu.utils.imports import symbol_by_name

    (argv, _health) = invocations("web")
    assert argv[0] == "gunicorn"
    wsgi = next(arg for arg in argv[1:] if not arg.startswith("-"))
    assert callable(symbol_by_name(wsgi))
    host, port = option(argv, "--bind").rsplit(":", 1)
    assert (host, int(port)) == ("0.0.0.0", 8000)
    assert SERVICE["web"]["ports"] == ["8000:8000"]
    assert_gunicorn_config(option(argv, "--config"))


def assert_gunicorn_config(reference: str | None) -> None:
    """``python:<module>`` naming a module with the multiprocess metrics hooks."""
    import importlib

    assert reference and reference.startswith("python:"), reference
    module = importlib.import_module(reference.removeprefix("python:"))
    assert callable(module.on_starting) and callable(module.child_exit) and callable(module.on_exit)


def test_the_images_default_command_is_the_same_gunicorn():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    argv = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    (web_argv, _health) = invocations("web")
    assert argv[0] == web_argv[0] == "gunicorn"
    assert_gunicorn_config(option(argv, "--config"))
    assert option(argv, "--config") == option(web_argv, "--config")


# --- health checks, dependencies, volumes --------------------------------------


def test_health_checks_of_postgres_redis_and_web():
    assert "pg_isready" in SERVICE["postgres"]["healthcheck"]["test"][-1]
    assert SERVICE["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    (_, web_check) = invocations("web")
    (url,) = re.findall(r"https?://[^'\"\s]+", web_check[-1])
    host, port, path = url_parts(url)
    assert (host, port) == ("127.0.0.1", 8000)
    assert view_name(path) == HEALTH_VIEW


def test_the_images_health_check_calls_the_health_endpoint():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (.*)$", dockerfile, re.M | re.S).group(1)
    (url,) = re.findall(r"https?://[^'\"\s]+", healthcheck)
    _, port, path = url_parts(url)
    assert port == 8000
    assert view_name(path) == HEALTH_VIEW
    assert "urllib" in healthcheck


def test_the_path_checks_catch_a_renamed_url():
    with pytest.raises(Resolver404):
        resolve("/api/monitoring/system-healthz")


def test_dependencies_wait_for_health_and_the_migration():
    expected = {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    for name in LONG_RUNNING:
        assert SERVICE[name]["depends_on"] == {key: {"condition": value} for key, value in expected.items()}, name
    assert SERVICE["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name, spec in SERVICE.items():
        depends = spec.get("depends_on", {})
        for target in depends:
            assert target in SERVICE, (name, target)
            if isinstance(depends, dict) and depends[target]["condition"] == "service_healthy":
                check = SERVICE[target].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), target


def test_volumes_are_declared_and_bind_mounts_exist():
    declared = set(COMPOSE["volumes"])
    used = set()
    for name in SERVICE:
        for source, _target in mounts(name):
            if source.startswith((".", "/")):
                assert host_path(source).exists(), (name, source)
            else:
                assert source in declared, (name, source)
                used.add(source)
    assert used == declared
    assert ("postgres-data", "/var/lib/postgresql/data") in mounts("postgres")


# --- Dockerfile and build context ----------------------------------------------


def test_dockerfile_layers():
    lines = [line for line in (DOCKER / "Dockerfile").read_text().splitlines() if line and not line.startswith("#")]
    text = "\n".join(lines)

    def at(pattern: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert at(r"^COPY requirements\.txt ") < at(r"pip install -r") < at(r"^COPY (--chown=\S+ )?\. \.$")
    assert at(r"^COPY (--chown=\S+ )?\. \.$") < at(r"manage\.py collectstatic --noinput") < at(r"^USER ")
    (user,) = re.findall(r"^USER (\S+)$", text, re.M)
    assert user not in {"root", "0"}


def test_the_image_installs_the_server_requirements_and_not_the_test_tooling():
    lines = [line for line in (DOCKER / "Dockerfile").read_text().splitlines() if not line.startswith("#")]
    instructions = "\n".join(lines)
    assert re.findall(r"pip install (.+?)(?: &&|$)", instructions, re.M) == ["-r /tmp/requirements.txt"]
    assert re.search(r"^COPY requirements\.txt /tmp/requirements\.txt$", instructions, re.M)
    assert "requirements-dev" not in instructions


def test_dockerignore_keeps_the_context_to_the_source():
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    patterns.discard("")
    assert {".git", ".venv", "var", "staticfiles", ".env", "**/__pycache__"} <= patterns
    needed = {"manage.py", "requirements.txt", "edm", "accounts", "config", "contacts", "queues", "monitoring"}
    assert needed.isdisjoint(patterns)
    assert all((ROOT / name).exists() for name in needed)


# --- Prometheus and Grafana ----------------------------------------------------


def test_prometheus_scrapes_the_web_and_every_scheduler_replica():
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    scraped = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host == "localhost":
                    assert (job["job_name"], int(port)) == ("prometheus", 9090)
                    continue
                assert host in SERVICE and int(port) in container_ports(host), target
                assert SERVICE[host].get("deploy", {}).get("replicas", 1) == 1, f"{host}: use dns_sd for replicas"
                scraped[host] = (int(port), job.get("metrics_path", "/metrics"))
        for sd in job.get("dns_sd_configs", []):
            for dns_name in sd["names"]:
                service = dns_name.removeprefix("tasks.")
                assert service in SERVICE and sd["port"] in container_ports(service), dns_name
                scraped[service] = (sd["port"], job.get("metrics_path", "/metrics"))
    assert set(scraped) == {"web", "scheduler"}
    assert view_name(scraped["web"][1]) == "metrics_view"
    (argv, _) = invocations("scheduler")
    assert scraped["scheduler"] == (int(option(argv, "--metrics-port")), "/metrics")
    config_file = option(SERVICE["prometheus"]["command"], "--config.file")
    assert (str(PROMETHEUS_FILE.relative_to(DOCKER).as_posix()), config_file) in [
        (str(Path(source).as_posix()).removeprefix("./"), target) for source, target in mounts("prometheus")
    ]


def test_grafana_provisioning_matches_its_mounts():
    by_target = {target: host_path(source) for source, target in mounts("grafana")}
    provisioning = by_target["/etc/grafana/provisioning"]
    assert provisioning / "datasources" / "prometheus.yml" == DATASOURCE_FILE
    assert provisioning / "dashboards" / "edm.yml" == PROVIDER_FILE
    (provider,) = yaml.safe_load(PROVIDER_FILE.read_text())["providers"]
    assert by_target[provider["options"]["path"]] / "edm.json" == DASHBOARD_FILE

    (datasource,) = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"]
    host, port, _ = url_parts(datasource["url"])
    assert host == "prometheus" and port in container_ports("prometheus")
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    uids |= {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
    assert uids == {datasource["uid"]}


# --- metric names in the dashboard -----------------------------------------------

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
_PROMQL_WORDS |= {"offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords, labels and ranges left out)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group() in _PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def exposition_names(text: str) -> set[str]:
    return {re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group() for line in text.splitlines() if line[:1].isalpha()}


@pytest.fixture
def exported_metric_names(client, email_service) -> set[str]:
    """Every sample name the web's /metrics and a scheduler's registry expose."""
    from prometheus_client import generate_latest
    from prometheus_client.metrics import MetricWrapperBase

    from queues import metrics

    client.get("/api/monitoring/system-health")  # so the per-view HTTP metrics have a sample
    response = client.get("/metrics", **METRICS_AUTH)
    assert response.status_code == 200
    names = exposition_names(response.content.decode())

    # A labelled metric exposes nothing until a label set is used: use one, then remove it.
    touched = []
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            labels = ["deploy-test"] * len(metric._labelnames)
            metric.labels(*labels)
            touched.append((metric, labels))
    try:
        names |= exposition_names(generate_latest(metrics.SCHEDULER_REGISTRY).decode())
    finally:
        for metric, labels in touched:
            metric.remove(*labels)
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def unknown_metrics(exprs: list[str], exported: set[str]) -> set[str]:
    used = set().union(*(promql_metric_names(expr) for expr in exprs))
    # django-prometheus families that need traffic of a particular kind to show a sample.
    return {name for name in used if name not in exported and not name.startswith(("django_http_", "django_db_"))}


@pytest.mark.django_db
def test_every_dashboard_metric_is_exported(exported_metric_names):
    assert unknown_metrics(dashboard_exprs(), exported_metric_names) == set()


@pytest.mark.django_db
def test_the_metric_check_catches_a_renamed_metric(exported_metric_names):
    renamed = ['sum(rate(edm_mails_sent[5m])) / on() group_left sum by (le) (edm_queue_subtask{status="pending"})']
    assert unknown_metrics(renamed, exported_metric_names) == {"edm_mails_sent", "edm_queue_subtask"}


def test_the_dashboard_shows_what_operators_need():
    used = set().union(*(promql_metric_names(expr) for expr in dashboard_exprs()))
    assert {
        "edm_mails_sent_total",
        "edm_mails_failed_total",
        "edm_first_send_wait_seconds_bucket",
        "edm_queue_subtasks",
        "edm_ready_services",
        "edm_live_schedulers",
        "edm_service_sent_total",
        "edm_service_failed_total",
        "edm_open_alerts",
        "edm_claim_seconds_bucket",
        "edm_send_seconds_bucket",
    } <= used
    quantiles = [expr for expr in dashboard_exprs() if "edm_first_send_wait_seconds_bucket" in expr]
    assert {re.search(r"histogram_quantile\((0\.\d+)", expr).group(1) for expr in quantiles} == {"0.5", "0.95"}


def test_prometheus_sends_the_metrics_token_the_app_services_check():
    """Every scrape carries the bearer token from the Compose secret made of EDM_METRICS_TOKEN."""
    assert RAW["secrets"] == {"metrics_token": {"environment": "EDM_METRICS_TOKEN"}}
    assert SERVICE["prometheus"]["secrets"] == ["metrics_token"]
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    app_jobs = [job for job in config["scrape_configs"] if job["job_name"] != "prometheus"]
    assert {job["job_name"] for job in app_jobs} == {"edm-web", "edm-scheduler"}
    for job in app_jobs:
        assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}
    for name in APP_SERVICES:
        assert environment(name)["EDM_METRICS_TOKEN"] == ENV["EDM_METRICS_TOKEN"], name


def test_the_scheduler_health_check_sends_the_metrics_token():
    (_, check) = invocations("scheduler")
    code = check[-1]
    assert "http://127.0.0.1:9100/metrics" in code
    assert "'Authorization': 'Bearer ' + os.environ['EDM_METRICS_TOKEN']" in code
    compile(code, "healthcheck", "exec")  # one valid line of Python after YAML folded it
