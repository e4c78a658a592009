"""A bad environment stops every entry point at start: one line on stderr, exit status 1.

Each process is started as docker/docker-compose.yml starts it (the same
program, arguments and environment), with one variable broken. Nothing here
needs the stack: the settings are checked before any connection is made.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.test_compose import SERVICE, environment
from tests.web import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtualenv's bin: python, gunicorn, celery


def compose_argv(service: str) -> list[str]:
    """The service's command with its program taken from the virtualenv."""
    program, *args = SERVICE[service]["command"]
    return [str(BIN / program), *args]


ENTRY_POINTS = {
    "web (gunicorn)": ("web", compose_argv("web")),
    "scheduler": ("scheduler", compose_argv("scheduler")),
    "run_scheduler --help": ("scheduler", [str(BIN / "python"), "manage.py", "run_scheduler", "--help"]),
    "manage.py --help": ("scheduler", [str(BIN / "python"), "manage.py", "--help"]),
    "migrate": ("migrate", [str(BIN / "python"), "manage.py", "migrate", "--noinput"]),
    "celery worker": ("celery-worker", compose_argv("celery-worker")),
    "celery beat": ("celery-beat", compose_argv("celery-beat")),
}

BAD_ENVIRONMENTS = {
    "bad-bool": (
        {"DEBUG": "maybe"},
        "DEBUG='maybe' is not a boolean (use one of 1/0, true/false, yes/no, on/off)",
    ),
    "bad-database-scheme": (
        {"DATABASE_URL": "mysql://edm:hunter2@db:3306/edm"},
        "DATABASE_URL must point at PostgreSQL (postgres://…) or SQLite (sqlite:///…), not a 'mysql' URL",
    ),
    "non-integer": ({"DB_POOL_MAX_SIZE": "lots"}, "DB_POOL_MAX_SIZE='lots' is not an integer"),
}


def start(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, check=False)


def service_environment(service: str, **changes: str) -> dict[str, str]:
    stack = environment(service)
    assert stack["SECRET_KEY"] and stack["DEBUG"] == "0"  # production, as in the stack
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home()), **stack, **changes}


def test_the_argv_is_the_one_the_stack_runs():
    assert ENTRY_POINTS["web (gunicorn)"][1][1:3] == ["--config=python:edm.gunicorn_conf", "edm.wsgi:application"]
    assert ENTRY_POINTS["celery worker"][1][1:4] == ["-A", "edm", "worker"]
    assert ENTRY_POINTS["celery beat"][1][1:4] == ["-A", "edm", "beat"]
    assert ENTRY_POINTS["scheduler"][1][1:3] == ["manage.py", "run_scheduler"]


@pytest.mark.parametrize("bad", list(BAD_ENVIRONMENTS))
@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_a_bad_variable_stops_the_process_with_one_line(entry_point, bad):
    service, argv = ENTRY_POINTS[entry_point]
    changes, message = BAD_ENVIRONMENTS[bad]
    result = start(argv, service_environment(service, **changes))
    assert (result.returncode, result.stderr) == (1, f"configuration error: {message}\n")
    assert result.stdout == ""


NO_SECRET_KEY = "SECRET_KEY must be set: it signs sessions and tokens (it may be omitted only with DEBUG=1)"
BAD_BOOL = BAD_ENVIRONMENTS["bad-bool"][1]


def test_production_without_a_secret_key_stops_every_entry_point():
    for entry_point, (service, argv) in ENTRY_POINTS.items():
        env = service_environment(service)
        del env["SECRET_KEY"]
        result = start(argv, env)
        assert (result.returncode, result.stderr) == (1, f"configuration error: {NO_SECRET_KEY}\n"), entry_point


def test_gunicorn_without_the_projects_config_stops_instead_of_replacing_workers():
    """Each worker then finds the error; it exits with gunicorn's "failed to load", which stops the master."""
    argv = [str(BIN / "gunicorn"), "edm.wsgi:application", f"--bind=127.0.0.1:{free_port()}", "--workers=1"]
    result = start(argv, service_environment("web", DEBUG="maybe"))
    assert result.returncode == 4
    assert result.stderr.splitlines().count(f"configuration error: {BAD_BOOL}") == 1
    assert "Traceback" not in result.stderr
