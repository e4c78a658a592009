"""The compose stack's application services run as native processes (no Docker engine).

Each process gets what its container would: the service's command (entrypoint
and command, unchanged) and environment (the image's ``ENV``, ``env_file``,
``environment``), with ``${VAR}`` resolved from the variables an operator puts
in docker/.env. Only what names the containers' network is changed: the
database and Redis URLs point at the ones the tests use, and every container
port (in the command and in the health check) becomes a free port here. The
working directory is the checkout, which is what the image copies to its
``WORKDIR``; ``python``, ``gunicorn`` and ``celery`` come from the virtualenv,
as from the image's ``PATH``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.deploy.compose import (
    DOCKERFILE,
    ROOT,
    image_environment,
    image_workdir,
    service_argv,
    service_environment,
)
from tests.processes import database_url

VENV_BIN = Path(sys.executable).parent
DOCKER_DEFAULT_GRACE = 10.0  # seconds Docker waits after the stop signal when no stop_grace_period is given


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seconds(value: str | int | float | None, default: float) -> float:
    """A Compose duration ("30s", "2m", "1m30s") in seconds."""
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(number) * units[unit] for number, unit in re.findall(r"([\d.]+)(ms|h|m|s)", value))


def container_ports(spec: dict[str, Any]) -> set[int]:
    published = {int(str(port).rsplit(":", 1)[-1].split("/")[0]) for port in spec.get("ports", [])}
    return published | {int(port) for port in spec.get("expose", [])}


def with_ports(text: str, ports: dict[int, int]) -> str:
    """``0.0.0.0:8000``, ``--metrics-port=9100``, ``127.0.0.1:9100/metrics`` with each container port mapped."""
    for inside, outside in ports.items():
        text = re.sub(rf"(?<=[:=]){inside}\b", str(outside), text)
    return text


@dataclass
class NativeService:
    """One replica of a compose service, started as a process from the checkout."""

    name: str
    spec: dict[str, Any]
    env: dict[str, str]
    log_path: Path
    ports: dict[int, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def argv(self) -> list[str]:
        return [with_ports(arg, self.ports) for arg in service_argv(self.spec)]

    @property
    def stop_grace(self) -> float:
        return seconds(self.spec.get("stop_grace_period"), DOCKER_DEFAULT_GRACE)

    @property
    def stop_signal(self) -> signal.Signals:
        return signal.Signals[self.spec.get("stop_signal", "SIGTERM")]

    def url(self, inside: int) -> str:
        return f"http://127.0.0.1:{self.ports[inside]}"

    def run(self, timeout: float) -> subprocess.CompletedProcess:
        """For one-shot services (migrate): run to the end."""
        return subprocess.run(
            self.argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(self) -> None:
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def healthcheck(self) -> list[str] | None:
        """The service's health check as argv (ports mapped), or None when it has none."""
        check = self.spec.get("healthcheck") or {}
        test = check.get("test")
        if check.get("disable") or not test or test == ["NONE"]:
            return None
        test = [with_ports(arg, self.ports) for arg in ([test] if isinstance(test, str) else test)]
        if test[0] == "CMD-SHELL" or len(test) == 1:
            return ["/bin/sh", "-c", test[-1]]
        return test[1:]

    def healthy(self) -> bool:
        argv = self.healthcheck()
        timeout = seconds((self.spec.get("healthcheck") or {}).get("timeout"), 30)
        try:
            result = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, tail: int = 4000) -> str:
        return f"--- {self.name} ({self.log_path.name})\n{self.log_path.read_text()[-tail:]}"

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=30)


def native_environment(
    spec: dict[str, Any], *, service_hosts: set[str], database: str | None = None, redis: str
) -> dict[str, str]:
    """The container's environment with the network names replaced; nothing else of the host's leaks in."""
    env = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/tmp")}
    env["HOSTNAME"] = socket.gethostname()  # Docker sets it; Celery's node name is celery@<hostname>
    env |= image_environment(DOCKERFILE.read_text())
    env |= service_environment(spec)
    env["DATABASE_URL"] = database or database_url()
    env["REDIS_URL"] = redis
    hosts = "|".join(re.escape(host) for host in sorted(service_hosts))
    inside = {key: value for key, value in env.items() if re.search(rf"//([^/@]*@)?({hosts})[:/]", value)}
    assert inside == {}, f"variables naming a container host, not mapped for a native run: {inside}"
    # A path inside the image would not exist in a checkout: paths are relative to the working directory.
    workdir = image_workdir(DOCKERFILE.read_text())
    inside = {key: value for key, value in env.items() if re.search(rf"(^|[\s=:]){re.escape(workdir)}\b", value)}
    assert inside == {}, f"variables naming a path in the image's {workdir}: {inside}"
    return env


def stop_all(services: list[NativeService]) -> dict[str, int | None]:
    """Each process's stop signal at once, then its exit code within its grace (None: still running)."""
    for service in services:
        if service.alive():
            service.proc.send_signal(service.stop_signal)
    started = time.monotonic()
    codes: dict[str, int | None] = {}
    for service in services:
        remaining = max(0.1, service.stop_grace - (time.monotonic() - started))
        try:
            codes[service.name] = service.proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            codes[service.name] = None
    return codes
