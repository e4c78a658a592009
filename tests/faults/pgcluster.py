"""A throwaway PostgreSQL cluster for scenarios that stop or restart the database server.

The machine's shared server is never restarted: such a scenario initdb's a
cluster of its own into a temporary directory, starts it on a free port,
migrates a database there and points the test (and every scheduler it starts)
at it. Binaries come from /usr/lib/postgresql/<newest version>/bin, or from
PG_BIN. Run as root, initdb and postgres run as the ``postgres`` user (they
refuse root), in a directory that user owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from django.db import connection

from tests.processes import child_environment

ROOT = Path(__file__).resolve().parent.parent.parent
DATABASE = "edm_throwaway"


def postgres_bin() -> Path:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (set PG_BIN)")
    return found[-1].parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ThrowawayCluster:
    """One cluster in a temporary directory: ``start()``, ``stop()``, ``restart()``, ``destroy()``."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.as_root = os.geteuid() == 0
        self.home = Path(tempfile.mkdtemp(prefix="edm-pg-"))
        self.data = self.home / "data"
        self.log = self.home / "server.log"
        if self.as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self.home, owner.pw_uid, owner.pw_gid)
        self.port = free_port()

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}\n{log}")

    def _pg_ctl(self, action: str, *args: str) -> None:
        options = (
            f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c max_connections=100 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, *args)

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clients are disconnected and their transactions rolled back, as in a real restart."""
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        self._pg_ctl("restart", "-m", mode)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self) -> None:
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as db:
            db.execute(f"CREATE DATABASE {DATABASE}")

    def migrate(self) -> None:
        env = {**child_environment(), "DATABASE_URL": self.url}
        done = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"migrate on the throwaway cluster failed:\n{done.stdout}{done.stderr}")

    def destroy(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.home, ignore_errors=True)


def close_default_connection() -> None:
    """Close the test's own connection, and its pool if it has one (the pool would keep the old server)."""
    connection.close()
    if hasattr(connection, "close_pool"):
        connection.close_pool()


def postmaster_started() -> object:
    """When the server behind the test's default database started (a restart changes it)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_postmaster_start_time()")
        return cursor.fetchone()[0]


@contextmanager
def default_database_on(cluster: ThrowawayCluster) -> Iterator[None]:
    """Point the test's default database (and so every child process's DATABASE_URL) at the cluster."""
    from django.contrib.contenttypes.models import ContentType

    saved = dict(connection.settings_dict)
    close_default_connection()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=cluster.port, NAME=DATABASE, USER="postgres", PASSWORD="")
    ContentType.objects.clear_cache()  # ids differ from one database to the other
    try:
        yield
    finally:
        close_default_connection()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
        ContentType.objects.clear_cache()


@contextmanager
def throwaway_cluster() -> Iterator[ThrowawayCluster]:
    """A started cluster with a migrated database; the test's default database points at it meanwhile."""
    cluster = ThrowawayCluster()
    try:
        cluster.init()
        cluster.start()
        cluster.create_database()
        cluster.migrate()
        with default_database_on(cluster):
            yield cluster
    finally:
        cluster.destroy()
