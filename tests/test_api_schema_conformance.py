"""The API does what its OpenAPI schema says: ``schemathesis run --checks all`` finds nothing.

The schemathesis command line runs against the app served by gunicorn on the
test database, as an outsider would run it: every phase (examples, coverage,
fuzzing, stateful), every check (server errors, undocumented status codes and
content types, response bodies against their schemas, schema-valid input
refused, schema-invalid input accepted, auth ignored...), with a staff user's
token and with a plain user's, side by side. The run is seeded and bounded; set
EDM_SCHEMA_EXAMPLES (examples per operation, default 10) and EDM_SCHEMA_SEED
for a longer or another run. The few rules JSON Schema cannot state are
listed, each with its reason, in tests/schemathesis.toml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from tests.web import gunicorn

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("EDM_SCHEMA_EXAMPLES", "10"))
SEED = int(os.environ.get("EDM_SCHEMA_SEED", "20261206"))


def _cli() -> str:
    beside_python = Path(sys.executable).with_name("schemathesis")
    return str(beside_python) if beside_python.exists() else shutil.which("schemathesis") or "schemathesis"


def schemathesis_command(base_url: str, token: str) -> list[str]:
    return [
        _cli(),
        "--config-file",
        str(CONFIG),
        "run",
        f"{base_url}/api/schema/",
        "--checks",
        "all",
        "--header",
        f"Authorization: Token {token}",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--no-color",
        "--request-timeout",
        "30",
    ]


@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_failure_as_staff_or_as_a_plain_user(django_user_model, tmp_path):
    tokens = {}
    for name, is_staff in (("staff", True), ("plain-user", False)):
        user = django_user_model.objects.create_user(name, f"{name}@example.com", "pw", is_staff=is_staff)
        tokens[name] = Token.objects.create(user=user).key

    with gunicorn(tmp_path / "gunicorn.log", workers=2) as (base_url, _):
        runs = {}
        for name, token in tokens.items():
            workdir = tmp_path / name  # keeps hypothesis' example database out of the checkout
            workdir.mkdir()
            output = (workdir / "report.txt").open("w")
            command = schemathesis_command(base_url, token)
            runs[name] = (subprocess.Popen(command, cwd=workdir, stdout=output, stderr=subprocess.STDOUT), output)
        codes = {name: proc.wait(timeout=900) for name, (proc, _) in runs.items()}
        for _, output in runs.values():
            output.close()

    reports = {name: (tmp_path / name / "report.txt").read_text() for name in runs}
    failed = {name: reports[name] for name, code in codes.items() if code != 0}
    assert not failed, "\n\n".join(f"===== as {name} =====\n{report}" for name, report in failed.items())
    assert all("Test cases:" in report for report in reports.values()), reports
