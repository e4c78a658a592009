"""docker/docker-compose.yml and docker/Dockerfile read the way Compose and Docker read them.

No Docker engine is needed: ``${VAR}`` references are resolved here as Compose
resolves them, and a service's command and environment are put together as
a container would get them (the image's ``ENV``, then ``env_file``, then
``environment``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"

_VAR = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")
_REQUIRED = re.compile(r"\$\{(\w+):?\?")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Resolve ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` and ``$$`` as Compose does."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        current = env.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op and op.endswith("?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op and op.endswith("-") and unset:
            return arg
        return current or ""

    return _VAR.sub(replace, value)


def required_variables(text: str) -> set[str]:
    """The ``${VAR:?...}`` names: what an operator must set before the stack starts."""
    return set(_REQUIRED.findall(text))


def image_environment(dockerfile: str) -> dict[str, str]:
    """The ``ENV`` of a Dockerfile (``ENV A=1 \\ B=2`` form), as every container of the image starts with."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    env: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def image_workdir(dockerfile: str) -> str:
    """The image's (last) ``WORKDIR``: where its commands run, and where the checkout's files are."""
    return re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)[-1]


def _env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("'\"")
    return env


def service_environment(spec: dict[str, Any]) -> dict[str, str]:
    """A service's ``env_file`` entries then its ``environment`` (which wins), as strings."""
    env: dict[str, str] = {}
    files = spec.get("env_file") or []
    for entry in [files] if isinstance(files, (str, dict)) else files:
        path, required = (entry, True) if isinstance(entry, str) else (entry["path"], entry.get("required", True))
        file = COMPOSE_FILE.parent / path
        if file.exists() or required:
            env |= _env_file(file)
    given = spec.get("environment") or {}
    if isinstance(given, list):
        given = dict(item.split("=", 1) for item in given)
    env |= {key: "" if value is None else str(value) for key, value in given.items()}
    return env


def service_argv(spec: dict[str, Any]) -> list[str]:
    """What a service's container runs: its ``entrypoint`` then its ``command`` (strings split as Compose does)."""

    def split(value: Any) -> list[str]:
        if value is None:
            return []
        return shlex.split(value) if isinstance(value, str) else [str(item) for item in value]

    return split(spec.get("entrypoint")) + split(spec.get("command"))
