"""gunicorn serving edm.wsgi on the test database, as docker/Dockerfile starts it."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.processes import child_environment
from tests.schedulers import ROOT, wait_until

GUNICORN_CONFIG = "python:edm.gunicorn_conf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn(
    log_path: Path, *, workers: int = 1, env: dict[str, str] | None = None, extra: tuple[str, ...] = ()
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start gunicorn with the project's config; yields (base URL, process) once /metrics answers."""
    port = free_port()
    environment = {k: v for k, v in child_environment().items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                GUNICORN_CONFIG,
                "edm.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                *extra,
            ],
            cwd=ROOT,
            env={**environment, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            return requests.get(f"{base_url}/metrics", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow to start on a busy machine
            return False

    try:
        wait_until(answers, timeout=30, what="gunicorn to answer")
        yield base_url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
