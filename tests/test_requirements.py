"""requirements.txt is what the server runs; requirements-dev.txt adds the tests and tools.

Both pin every package with ==; the server's file has no test tool, provides
every third-party module the project's code imports, and is closed under the
installed packages' own requirements (so `pip install -r requirements.txt`
installs nothing unpinned). The same holds for both files together and the
tests and benchmarks.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_FILE = ROOT / "requirements.txt"
DEV_FILE = ROOT / "requirements-dev.txt"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!-]+)$")
TEST_TOOLS = {
    "pytest",
    "pytest-django",
    "pytest-xdist",
    "factory-boy",
    "faker",
    "time-machine",
    "hypothesis",
    "schemathesis",
    "playwright",
    "ruff",
}
NOT_PROJECT_CODE = {".venv", "var", "staticfiles", ".git"}
TEST_CODE = {"tests", "bench"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def pins(path: Path) -> dict[str, str]:
    """{normalized name: version}; fails on a line that is not name==version or a repeated name."""
    found: dict[str, str] = {}
    for line in requirement_lines(path):
        if path == DEV_FILE and line == "-r requirements.txt":
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: {line!r} is not pinned as name==version"
        name = normalize(match["name"])
        assert name not in found, f"{path.name}: {match['name']} is listed twice"
        found[name] = match["version"]
    return found


RUNTIME = pins(RUNTIME_FILE)
DEV = pins(DEV_FILE)


def python_files(*, tests: bool) -> Iterable[Path]:
    for path in ROOT.rglob("*.py"):
        top = path.relative_to(ROOT).parts[0]
        if top in NOT_PROJECT_CODE:
            continue
        if (top in TEST_CODE) == tests:
            yield path


def first_party() -> set[str]:
    return {path.name for path in ROOT.iterdir() if (path / "__init__.py").exists()} | {"manage"}


def imported_distributions(files: Iterable[Path]) -> dict[str, set[str]]:
    """{third-party top-level module: the distributions that provide it} for every absolute import."""
    modules: set[str] = set()
    for path in files:
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])
        # A script (bench/) imports the modules beside it by their bare names.
        modules |= found - {sibling.stem for sibling in path.parent.glob("*.py")}
    modules -= set(sys.stdlib_module_names) | first_party() | {"__future__"}
    providers = importlib.metadata.packages_distributions()
    return {module: {normalize(dist) for dist in providers.get(module, [])} for module in modules}


def requirements_of(name: str, extras: Iterable[str] = ()) -> set[tuple[str, tuple[str, ...]]]:
    """(name, extras) of what the installed distribution needs here (markers evaluated for this Python)."""
    needed = set()
    environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
    for line in importlib.metadata.distribution(name).requires or []:
        requirement = Requirement(line)
        if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
            needed.add((normalize(requirement.name), tuple(sorted(requirement.extras))))
    return needed


def unpinned_requirements(pinned: dict[str, str]) -> dict[str, set[str]]:
    missing: dict[str, set[str]] = {}
    for name in pinned:
        for needed, extras in requirements_of(name):
            for dependency in {needed} | {d for d, _ in requirements_of(needed, extras)}:
                if dependency not in pinned:
                    missing.setdefault(dependency, set()).add(name)
    return missing


def test_the_dev_file_starts_from_the_server_file():
    assert requirement_lines(DEV_FILE)[0] == "-r requirements.txt"
    assert not any(line.startswith("-") for line in requirement_lines(RUNTIME_FILE))


def test_no_package_is_in_both_files():
    assert set(RUNTIME) & set(DEV) == set()


def test_the_server_file_has_no_test_tool_but_the_dev_file_has_them_all():
    assert set(RUNTIME) & TEST_TOOLS == set()
    assert set(DEV) >= TEST_TOOLS


def test_the_pins_are_the_installed_versions():
    installed = {name: importlib.metadata.version(name) for name in {**RUNTIME, **DEV}}
    assert installed == {**RUNTIME, **DEV}


def test_every_third_party_import_of_the_server_code_is_in_the_server_file():
    imports = imported_distributions(python_files(tests=False))
    assert {"django", "rest_framework", "celery", "psycopg", "aiosmtpd"} <= set(imports)
    missing = {module: dists for module, dists in imports.items() if not dists & set(RUNTIME)}
    assert missing == {}


def test_every_third_party_import_of_the_tests_and_benchmarks_is_pinned():
    imports = imported_distributions(python_files(tests=True))
    assert {"pytest", "factory", "playwright", "schemathesis"} <= set(imports)
    missing = {module: dists for module, dists in imports.items() if not dists & (set(RUNTIME) | set(DEV))}
    assert missing == {}


@pytest.mark.parametrize(
    "files", [pytest.param((RUNTIME,), id="server"), pytest.param((RUNTIME, DEV), id="server-and-dev")]
)
def test_each_install_pins_what_its_packages_need(files):
    pinned = {name: version for file in files for name, version in file.items()}
    assert unpinned_requirements(pinned) == {}
