"""docker/deploy.sh against a fake ``docker`` (first on PATH) and a local health endpoint.

The fake logs every call (with the EDM_TAG it was given) and keeps image tags
as files, so the tests see both the sequence of commands and which image each
tag names afterwards. ``FAKE_DOCKER_FAIL`` makes calls containing one of its
comma-separated substrings fail.
"""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "deploy.sh"
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"

FAKE_DOCKER = """#!{python}
import os, sys
from pathlib import Path

args = sys.argv[1:]
line = " ".join(args)
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(f"EDM_TAG={{os.environ.get('EDM_TAG', '')}} {{line}}\\n")
for pattern in filter(None, os.environ.get("FAKE_DOCKER_FAIL", "").split(",")):
    if pattern in line:
        sys.exit(1)
images = Path(os.environ["FAKE_DOCKER_IMAGES"])

def path(name):
    return images / name.replace("/", "_").replace(":", "@")

if args[0] == "build":
    path(args[args.index("-t") + 1]).write_text(os.environ["FAKE_IMAGE_ID"])
elif args[0] == "pull":
    path(args[-1]).write_text(os.environ["FAKE_IMAGE_ID"])
elif args[0] == "tag":
    if not path(args[1]).exists():
        sys.exit(1)
    path(args[2]).write_text(path(args[1]).read_text())
elif args[:2] == ["image", "inspect"]:
    if not path(args[-1]).exists():
        print(f"Error: No such image: {{args[-1]}}", file=sys.stderr)
        sys.exit(1)
    print(path(args[-1]).read_text())
"""


class HealthEndpoint:
    """Answers 503 to the first ``failures`` requests, then 200 (``failures=None``: always 503)."""

    def __init__(self) -> None:
        self.failures: int | None = 0
        self.requests = 0
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                endpoint.requests += 1
                healthy = endpoint.failures is not None and endpoint.requests > endpoint.failures
                self.send_response(200 if healthy else 503)
                self.end_headers()
                self.wfile.write(b'{"status": "healthy"}' if healthy else b'{"status": "unhealthy"}')

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/monitoring/system-health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Deploy:
    def __init__(self, tmp_path: Path, health: HealthEndpoint) -> None:
        self.bin = tmp_path / "bin"
        self.images = tmp_path / "images"
        self.log = tmp_path / "docker.log"
        self.bin.mkdir()
        self.images.mkdir()
        docker = self.bin / "docker"
        docker.write_text(FAKE_DOCKER.format(python=sys.executable))
        docker.chmod(0o755)
        self.health = health
        self.image_id = "sha256:new"

    def image(self, name: str) -> str | None:
        path = self.images / name.replace("/", "_").replace(":", "@")
        return path.read_text() if path.exists() else None

    def set_image(self, name: str, image_id: str) -> None:
        (self.images / name.replace("/", "_").replace(":", "@")).write_text(image_id)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def run(self, *args: str, fail: str = "") -> subprocess.CompletedProcess:
        self.log.write_text("")
        env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_DOCKER_LOG": str(self.log),
            "FAKE_DOCKER_IMAGES": str(self.images),
            "FAKE_DOCKER_FAIL": fail,
            "FAKE_IMAGE_ID": self.image_id,
            "EDM_HEALTH_URL": self.health.url,
            "EDM_HEALTH_RETRIES": "3",
            "EDM_HEALTH_INTERVAL": "0",
        }
        for name in ("EDM_IMAGE", "EDM_TAG", "EDM_STOP_GRACE", "EDM_COMPOSE_FILE"):
            env.pop(name, None)
        self.health.requests = 0
        return subprocess.run(
            ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )


@pytest.fixture
def health():
    endpoint = HealthEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture
def deploy(tmp_path, health):
    return Deploy(tmp_path, health)


def index(calls: list[str], pattern: str, start: int = 0) -> int:
    """Position of the first call at or after ``start`` matching the regex ``pattern``."""
    for i, call in enumerate(calls[start:], start):
        if re.search(pattern, call):
            return i
    raise AssertionError(f"no call matches {pattern!r} in:\n" + "\n".join(calls))


def matching(calls: list[str], pattern: str) -> list[str]:
    return [call for call in calls if re.search(pattern, call)]


def scheduler_grace() -> int:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    return int(compose["services"]["scheduler"]["stop_grace_period"].removesuffix("s"))


def test_help_explains_and_runs_nothing(deploy):
    result = deploy.run("--help")

    assert result.returncode == 0
    assert result.stdout.startswith("Usage: docker/deploy.sh")
    assert "forward-only" in result.stdout
    assert "--pull" in result.stdout
    assert deploy.calls() == []


def test_unknown_argument_is_refused(deploy):
    result = deploy.run("--tga", "x")

    assert result.returncode == 2
    assert "unknown argument: --tga" in result.stderr
    assert deploy.calls() == []


def test_upgrade_migrates_then_stops_schedulers_gracefully_then_starts_the_new_image(deploy, health):
    deploy.set_image("edm:current", "sha256:old")

    result = deploy.run("--tag", "abc123")

    assert result.returncode == 0, result.stderr
    calls = deploy.calls()
    config = index(calls, r"compose -f \S+docker-compose.yml config --quiet$")
    build = index(calls, r"^EDM_TAG=\S* build -f \S+/docker/Dockerfile -t edm:abc123 ")
    infra = index(calls, r"compose .* up -d --wait postgres redis$")
    migrate = index(calls, r"^EDM_TAG=abc123 compose .* run --rm --no-deps migrate$")
    retag = index(calls, r"^EDM_TAG=\S* tag edm:current edm:previous$")
    index(calls, r"^EDM_TAG=\S* tag edm:abc123 edm:current$", retag)
    stop = index(calls, rf"^EDM_TAG=current compose .* stop -t {scheduler_grace()} scheduler$")
    web = index(
        calls, r"^EDM_TAG=current compose .* up -d --no-build --no-deps --force-recreate web celery-worker celery-beat$"
    )
    start = index(calls, r"^EDM_TAG=current compose .* up -d --no-build --no-deps --wait --force-recreate scheduler$")
    assert config < build < infra < migrate < retag < stop < web < start
    assert health.requests == 1
    assert deploy.image("edm:current") == "sha256:new"
    assert deploy.image("edm:previous") == "sha256:old"
    assert "Migrating the database" in result.stdout
    assert "Deployed edm:abc123" in result.stdout


def test_the_health_check_is_retried_until_the_web_answers(deploy, health):
    health.failures = 2

    result = deploy.run("--tag", "abc123")

    assert result.returncode == 0, result.stderr
    assert health.requests == 3
    assert result.stdout.count("not healthy yet") == 2
    calls = deploy.calls()
    assert index(calls, r"up -d .*web celery-worker celery-beat$") < index(calls, r"up -d .*--wait .*scheduler$")


def test_a_failing_health_check_rolls_back_to_the_previous_image(deploy, health):
    deploy.set_image("edm:current", "sha256:old")
    health.failures = 3  # every attempt of the deploy; the rolled-back web answers

    result = deploy.run("--tag", "broken")

    assert result.returncode == 1
    assert "rolled back to edm:previous, which is healthy" in result.stderr
    assert "edm:broken is not deployed" in result.stderr
    assert "forward-only" in result.stdout
    calls = deploy.calls()
    web = index(calls, r"up -d --no-build --no-deps --force-recreate web celery-worker celery-beat$")
    restore = index(calls, r"^EDM_TAG=\S* tag edm:previous edm:current$", web)
    stop = index(calls, rf"^EDM_TAG=current compose .* stop -t {scheduler_grace()} scheduler$", restore)
    index(
        calls,
        r"^EDM_TAG=current compose .* up -d --no-build --no-deps --force-recreate web celery-worker "
        r"celery-beat scheduler$",
        stop,
    )
    # The new schedulers were never started.
    assert matching(calls, r"--wait .*scheduler$") == []
    assert deploy.image("edm:current") == "sha256:old"
    assert health.requests == 4


def test_a_rollback_that_stays_unhealthy_says_so(deploy, health):
    deploy.set_image("edm:current", "sha256:old")
    health.failures = None

    result = deploy.run("--tag", "broken")

    assert result.returncode == 1
    assert "the web is still not healthy" in result.stderr
    assert deploy.image("edm:current") == "sha256:old"


def test_a_first_deploy_that_fails_has_nothing_to_roll_back_to(deploy, health):
    health.failures = None

    result = deploy.run("--tag", "first")

    assert result.returncode == 1
    assert "no earlier image to roll back to" in result.stderr
    assert matching(deploy.calls(), r"tag edm:previous") == []


def test_failed_migrations_leave_the_running_services_alone(deploy, health):
    deploy.set_image("edm:current", "sha256:old")

    result = deploy.run("--tag", "abc123", fail="run --rm --no-deps migrate")

    assert result.returncode == 1
    assert "migrations failed" in result.stderr
    calls = deploy.calls()
    assert matching(calls, r" tag | stop | up -d --no-build") == []
    assert deploy.image("edm:current") == "sha256:old"
    assert health.requests == 0


def test_a_failed_build_changes_nothing(deploy):
    result = deploy.run("--tag", "abc123", fail="build -f")

    assert result.returncode == 1
    assert "the image did not build; nothing was changed" in result.stderr
    assert matching(deploy.calls(), r" compose .* (run|stop|up) ") == []


def test_pull_instead_of_build(deploy):
    result = deploy.run("--tag", "abc123", "--pull")

    assert result.returncode == 0, result.stderr
    calls = deploy.calls()
    assert index(calls, r" pull edm:abc123$") < index(calls, r" run --rm --no-deps migrate$")
    assert matching(calls, r" build ") == []


def test_two_runs_in_a_row_succeed_and_the_second_keeps_the_rollback_image(deploy):
    deploy.set_image("edm:current", "sha256:old")

    first = deploy.run("--tag", "abc123")
    second = deploy.run("--tag", "abc123")

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    calls = deploy.calls()
    assert matching(calls, r" tag ") == []
    assert matching(calls, r"--force-recreate") == []
    assert index(calls, r" run --rm --no-deps migrate$") < index(calls, r" stop -t \d+ scheduler$")
    assert "already this image" in second.stdout
    assert deploy.image("edm:current") == "sha256:new"
    assert deploy.image("edm:previous") == "sha256:old"


def test_the_default_tag_is_the_git_commit(deploy):
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()

    result = deploy.run()

    assert result.returncode == 0, result.stderr
    (build,) = matching(deploy.calls(), r" build ")
    assert re.search(rf" -t edm:{sha}(-dirty)? ", build)
