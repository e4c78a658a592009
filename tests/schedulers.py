"""Running real ``manage.py run_scheduler`` processes against the test database."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.processes import child_environment

ROOT = Path(__file__).resolve().parent.parent


class Schedulers:
    """Several scheduler processes; stopped (SIGTERM, then SIGKILL) when the test ends."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, count: int = 3, *args: str, env: dict[str, str] | None = None) -> list[subprocess.Popen]:
        return [self.start_one(*args, env=env) for _ in range(count)]

    def start_one(
        self, *args: str, worker_id: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        index = len(self.procs)
        worker_id = worker_id or f"test-worker-{index}"
        log = open(self.tmp_path / f"scheduler-{index}.log", "w")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "run_scheduler", "--worker-id", worker_id, *args],
            cwd=ROOT,
            env={**child_environment(), "LOG_LEVEL": "INFO", **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc.log = log
        proc.log_path = log.name
        proc.worker_id = worker_id
        self.procs.append(proc)
        return proc

    def running(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def wait(self, timeout: float = 120) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for proc in self.procs:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                codes.append(proc.wait(timeout=remaining))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"scheduler {proc.pid} still running after {timeout} s:\n{self.logs()}") from None
        return codes

    def terminate(self, timeout: float = 60) -> list[int]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.log.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path}\n{Path(p.log_path).read_text()[-4000:]}" for p in self.procs)


def wait_until(condition: Callable[[], bool], *, timeout: float = 60, interval: float = 0.1, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
