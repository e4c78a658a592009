"""gunicorn settings for the web process: Prometheus figures summed over every worker.

Used as ``gunicorn --config python:edm.gunicorn_conf edm.wsgi:application``
(docker/Dockerfile, docker/docker-compose.yml). Everything else comes from the
command line. Importing it checks the settings (see below).

Each sync worker is its own process with its own Prometheus registry, so
without this a scrape of ``/metrics`` shows the requests of whichever worker
answered it. In prometheus_client's multiprocess mode every worker writes its
figures to files in ``PROMETHEUS_MULTIPROC_DIR`` and any worker's ``/metrics``
reads them all (``monitoring.metrics.metrics_view``). The directory is emptied
when the server starts; a temporary one is used when it is not set.
"""

from __future__ import annotations

import os as _os
import shutil as _shutil
import tempfile as _tempfile
from typing import Any

from edm.startup import load_settings_or_exit as _load_settings_or_exit

# gunicorn reads this module's public names as settings: helpers stay private.
_created_dir: str | None = None

# The master imports this module before it logs anything or forks a worker.
# A bad environment ends it here with one line and exit status 1; otherwise
# every worker would fail to import the application, each with a traceback.
_load_settings_or_exit()


def on_starting(server: Any) -> None:
    """In the master, before any worker is forked (and before the app is imported)."""
    global _created_dir
    directory = _os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = _created_dir = _tempfile.mkdtemp(prefix="edm-prometheus-")
        _os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    _os.makedirs(directory, exist_ok=True)
    for name in _os.listdir(directory):  # figures of an earlier run would add up with these
        path = _os.path.join(directory, name)
        if name.endswith(".db") and _os.path.isfile(path):
            _os.remove(path)
    server.log.info("Prometheus multiprocess directory: %s", directory)


def child_exit(server: Any, worker: Any) -> None:
    """A worker that exits (recycled, killed) leaves its counters; its live gauges go."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _created_dir:
        _shutil.rmtree(_created_dir, ignore_errors=True)
