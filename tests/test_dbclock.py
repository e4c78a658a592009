import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from common.dbclock import db_now
from tests.processes import child_environment, skewed_clock

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_db_now_is_aware_utc():
    now = db_now()
    assert now.tzinfo is not None
    assert now.utcoffset() == dt.timedelta(0)


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_db_now_ignores_a_skewed_host_clock():
    """A process whose clock is an hour ahead still reads the database's time."""
    script = (
        "import django, time; django.setup();"
        "from common.dbclock import db_now; print(db_now().timestamp() - time.time())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**child_environment(), **skewed_clock("+1h")},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    host_minus_db = -float(out.stdout.strip().splitlines()[-1])
    assert 3500 < host_minus_db < 3700  # the host's clock is an hour ahead, the database's is not
