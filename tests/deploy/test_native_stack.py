"""The compose stack's own commands, run for real: migrate, then web, schedulers, Celery worker and beat.

Every application service of docker/docker-compose.yml (built from the
project's image) is started as native processes (tests/deploy/native.py), as
many as its replicas, with the file's exact command and environment; only the
database, Redis and the ports are this machine's. The migrate job runs first,
as Compose runs it before the others. Then ``manage.py validate_deployment``
checks the running stack as an operator would, sending its mail through the
schedulers to an aiosmtpd relay, and every process must stop cleanly on its
compose stop signal within its stop grace period.

Variables an operator must set (``${VAR:?...}``) get a generated value here
unless listed in OPERATOR_ENV, so a new one in the compose file flows through.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from rest_framework.authtoken.models import Token

from monitoring.models import QueueSample
from monitoring.services.validation import VALIDATOR_USERNAME
from queues.models import MaintenanceRun, Task
from tests.deploy.compose import COMPOSE_FILE, ROOT, interpolate, required_variables
from tests.deploy.native import NativeService, container_ports, free_port, native_environment, stop_all
from tests.schedulers import wait_until

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

# The Redis the run was given (CI and parallel runs each use their own database).
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")
RECIPIENT = "stack-probe@deploy.example"
THROUGHPUT_TASKS = 20
STARTUP_SECONDS = 60


def operator_env(smtp_port: int) -> dict[str, str]:
    """docker/.env for this run: system mail to the test relay; every required secret set."""
    env = {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_port),
        # The stack decrypts the credentials of the services this process creates: the same keys.
        "EDM_FIELD_KEYS": ",".join(settings.EDM_FIELD_KEYS),
        # No TLS-terminating proxy in front here: the plain-http trial README describes.
        "SECURE_SSL_REDIRECT": "0",
    }
    for name in required_variables(COMPOSE_FILE.read_text()):
        env.setdefault(name, secrets.token_urlsafe(32))
    return env


def compose_services(smtp_port: int) -> dict[str, dict[str, Any]]:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), operator_env(smtp_port))["services"]


def replicas(name: str, spec: dict[str, Any], services: dict[str, Any], tmp_path: Path) -> list[NativeService]:
    count = (spec.get("deploy") or {}).get("replicas", 1)
    made = []
    for index in range(1, count + 1):
        env = native_environment(spec, service_hosts=set(services), redis=REDIS)
        ports = {port: free_port() for port in sorted(container_ports(spec))}
        made.append(NativeService(f"{name}-{index}", spec, env, tmp_path / f"{name}-{index}.log", ports))
    return made


def wait_healthy(services: list[NativeService], timeout: float) -> None:
    """Each process still running and passing its compose health check (each check passed once is done)."""
    pending = [s for s in services if s.healthcheck() is not None]
    deadline = time.monotonic() + timeout
    while pending:
        for service in services:
            assert service.alive(), f"{service.name} exited with {service.proc.returncode}:\n{service.log()}"
        pending = [s for s in pending if not s.healthy()]
        if pending and time.monotonic() > deadline:
            logs = "\n".join(s.log() for s in pending)
            raise AssertionError(f"not healthy after {timeout} s: {[s.name for s in pending]}\n{logs}")
        if pending:
            time.sleep(0.5)


@pytest.fixture
def stack(transactional_db, smtp_sink, tmp_path) -> Iterator[dict[str, list[NativeService]]]:
    """The migrate job run to completion, then every long-running application service started and healthy."""
    services = compose_services(smtp_sink.port)
    app = {name: spec for name, spec in services.items() if "build" in spec}
    one_shot = {name for name, spec in app.items() if spec.get("restart") == "no"}
    assert one_shot == {"migrate"}

    (migrate,) = replicas("migrate", app["migrate"], services, tmp_path)
    result = migrate.run(timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "installed sample_queue: every 60 s" in result.stdout

    running = {name: replicas(name, spec, services, tmp_path) for name, spec in app.items() if name not in one_shot}
    everything = [service for group in running.values() for service in group]
    try:
        for service in everything:
            service.start()
        wait_healthy(everything, timeout=STARTUP_SECONDS)
        yield running
    finally:
        for service in everything:
            service.kill()


def exec_in(service: NativeService, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``docker compose exec <service> <argv>``: the service's environment and working directory."""
    return subprocess.run(
        argv, cwd=ROOT, env={**service.env, **env}, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_compose_stack_runs_natively_validates_and_stops_cleanly(
    stack, smtp_sink, email_service_factory, user_factory
):
    assert {name: len(group) for name, group in stack.items()} == {
        "web": 1,
        "scheduler": 2,
        "celery-worker": 1,
        "celery-beat": 1,
    }
    everything = [service for group in stack.values() for service in group]
    logs = lambda: "\n".join(service.log() for service in everything)  # noqa: E731
    email_service_factory(name="relay-1", port=smtp_sink.port, sending_rate=0, daily_quota=10_000)
    token = Token.objects.create(user=user_factory(username="ops", is_staff=True)).key
    # Beat's first tick sends every sweep through Redis to the worker (the schedulers run none: --maintenance=off).
    wait_until(
        lambda: QueueSample.objects.exists() and MaintenanceRun.objects.filter(name="reset_quotas").exists(),
        timeout=30,
        what=f"beat and the worker to run the first sweeps\n{logs()}",
    )

    (web,) = stack["web"]
    result = exec_in(
        web,
        "python",
        "manage.py",
        "validate_deployment",
        "--base-url",
        web.url(8000),
        "--recipient",
        RECIPIENT,
        "--timeout",
        "30",
        "--throughput-tasks",
        str(THROUGHPUT_TASKS),
        "--max-sample-age",
        "60",
        env={"EDM_VALIDATE_TOKEN": token},
    )

    assert result.returncode == 0, result.stdout + result.stderr + logs()
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[1:-1] if not line.startswith(" ")] == [
        "PASS health",
        "PASS end-to-end",
        "PASS monitoring",
        "PASS throughput",
    ]
    assert lines[-1] == "deployment validated: 4 check(s) passed"
    assert "live schedulers 2" in result.stdout
    assert Counter(record.recipient for record in smtp_sink.snapshot()) == {RECIPIENT: 1 + THROUGHPUT_TASKS}
    tasks = Task.objects.filter(owner__username=VALIDATOR_USERNAME)
    assert Counter(tasks.values_list("status", flat=True)) == {"completed": 1 + THROUGHPUT_TASKS}

    codes = stop_all(everything)

    assert codes == {service.name: 0 for service in everything}, logs()
    for service in everything:
        assert "Traceback" not in service.log_path.read_text(), service.log()
