"""The API does what its OpenAPI schema says: ``schemathesis run --checks all`` finds nothing.

The schemathesis command line runs against the app served by a live server
thread, as an outsider would run it: every phase (examples, coverage, fuzzing,
stateful), every check (server errors, undocumented status codes and content
types, response bodies against their schemas, schema-valid input refused,
schema-invalid input accepted, auth ignored...), once with a staff user's
token and once with a plain user's. The run is seeded and bounded; set
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

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("EDM_SCHEMA_EXAMPLES", "10"))
SEED = int(os.environ.get("EDM_SCHEMA_SEED", "20261206"))


def _cli() -> str:
    beside_python = Path(sys.executable).with_name("schemathesis")
    return str(beside_python) if beside_python.exists() else shutil.which("schemathesis") or "schemathesis"


def run_schemathesis(base_url: str, token: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    command = [
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
    # The working directory keeps hypothesis' example database out of the checkout.
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("is_staff", [True, False], ids=["staff", "plain-user"])
def test_schemathesis_finds_no_failure(live_server, django_user_model, tmp_path, is_staff):
    user = django_user_model.objects.create_user("conformance", "c@example.com", "pw", is_staff=is_staff)
    token = Token.objects.create(user=user).key

    result = run_schemathesis(live_server.url, token, tmp_path)

    report = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, report
    assert "No issues found" in result.stdout or " passed" in result.stdout, report
