"""Run a function in several real OS processes against the test database.

Concurrency claims are tested with processes, not threads: each child is a
fresh interpreter (spawn) with its own database connection, started together
behind a barrier so that their work overlaps.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection


def database_url() -> str:
    """A DATABASE_URL naming the database the tests run on (the test database)."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or "postgres"
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings['NAME']}"


def child_environment() -> dict[str, str]:
    """Environment for a subprocess (a command, a scheduler) that must use the test database."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        DJANGO_SETTINGS_MODULE="tests.settings",
        # A pool per short-lived child would only multiply idle connections.
        DB_POOL="0",
        PYTHONUNBUFFERED="1",
    )
    return env


def _child(env: dict[str, str], barrier: Any, func_path: str, args: tuple) -> Any:
    os.environ.update(env)
    import importlib

    import django

    django.setup()
    from django.db import connections

    # Imported only now: the function's module may define models or use the ORM.
    module_name, _, name = func_path.partition(":")
    func = getattr(importlib.import_module(module_name), name)
    barrier.wait(timeout=60)
    try:
        return func(*args)
    finally:
        connections.close_all()


def run_in_processes(func: Callable[..., Any], args_list: Sequence[tuple], *, timeout: float = 120) -> list[Any]:
    """Call ``func(*args)`` once per entry of ``args_list``, each in its own process.

    ``func`` must be importable (a module-level function). Results come back
    in order; an exception in a child is raised here.
    """
    ctx = multiprocessing.get_context("spawn")
    env = child_environment()
    with ctx.Manager() as manager:
        barrier = manager.Barrier(len(args_list))
        with ctx.Pool(processes=len(args_list)) as pool:
            func_path = f"{func.__module__}:{func.__qualname__}"
            pending = [pool.apply_async(_child, (env, barrier, func_path, args)) for args in args_list]
            return [result.get(timeout=timeout) for result in pending]


LIBFAKETIME = os.environ.get("LIBFAKETIME_PATH", "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def skewed_clock(offset: str) -> dict[str, str]:
    """Environment that runs a child under a host clock off by ``offset`` (libfaketime: "+300s", "-1d").

    Only the wall clock is skewed; the monotonic clock, which a process uses
    for its own waits, stays real.
    """
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
