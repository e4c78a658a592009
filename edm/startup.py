"""How every process turns a bad environment into one line on stderr and exit status 1.

Django imports the settings module lazily (the first time something reads a
setting), which may be deep inside a command's help, a gunicorn worker or a
Celery worker, each of which would print a traceback or keep retrying. The
entry points (manage.py, edm.wsgi, edm.asgi, edm.celery, edm.gunicorn_conf)
call ``load_settings_or_exit`` first, so the settings module is imported, and
checked, before anything else runs.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from edm.env import EnvError

DEFAULT_SETTINGS_MODULE = "edm.settings"
# gunicorn replaces a worker that exits 1, forever; a worker that exits 4 (its
# "application failed to load") stops the master. Started with
# edm.gunicorn_conf, as documented, the master has checked the settings (and
# exited 1) before it forks any worker; this is for gunicorn without it.
GUNICORN_APP_LOAD_ERROR = 4


def _in_gunicorn_worker() -> bool:
    # The master imports the worker classes only after reading its config.
    return "gunicorn.workers.base" in sys.modules


def exit_with(error: EnvError, status: int = 1) -> NoReturn:
    """Write the error as one line (no traceback) and exit."""
    message = " ".join(str(error).split())
    sys.stderr.write(f"configuration error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)


@contextmanager
def env_errors_exit(status: int = 1) -> Iterator[None]:
    """Within the block, an ``EnvError`` ends the process with one line."""
    try:
        yield
    except EnvError as error:
        exit_with(error, status)


def load_settings_or_exit() -> None:
    """Import the settings module now; a bad environment ends the process with one line.

    The module is imported, not read through ``django.conf.settings``, so this
    never configures Django itself. That matters when a settings module that
    imports edm.settings (tests.settings) is being imported: the ``edm``
    package's ``__init__`` imports edm.celery, which calls this, and the import
    here then returns that module half-loaded, which must not become Django's
    settings.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS_MODULE)
    with env_errors_exit(GUNICORN_APP_LOAD_ERROR if _in_gunicorn_worker() else 1):
        importlib.import_module(os.environ["DJANGO_SETTINGS_MODULE"])
