"""Each manage.py, gunicorn and Celery command README shows carries the environment it needs.

A command's environment is what its line sets in front of it plus the
``export`` lines of the sh blocks before it in the same section. With that
environment the command starts (its ``--help``, or gunicorn's
``--check-config``, which imports the settings and the application); with
none of it, it stops with one line saying SECRET_KEY is missing.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PROGRAMS = (".venv/bin/python", ".venv/bin/gunicorn", ".venv/bin/celery")
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
NO_SECRET_KEY = (
    "configuration error: SECRET_KEY must be set: it signs sessions and tokens (it may be omitted only with DEBUG=1)\n"
)


@dataclass(frozen=True)
class Command:
    line: str
    exports: tuple[str, ...]

    def words(self) -> list[str]:
        return shlex.split(self.line, comments=True)

    def assignments(self) -> list[str]:
        words = self.words()
        return words[: next(i for i, word in enumerate(words) if not ASSIGNMENT.match(word))]

    def startup_check(self) -> list[str]:
        """The program and what names the process (command, Celery app and subcommand, gunicorn app)."""
        program, *args = self.words()[len(self.assignments()) :]
        if program.endswith("/gunicorn"):
            return [program, *[arg for arg in args if not arg.startswith("--bind")], "--check-config"]
        if program.endswith("/celery"):
            return [program, *args[:3], "--help"]
        assert args[0] == "manage.py", self.line
        return [program, *args[:2], "--help"]


def readme_commands() -> list[Command]:
    commands = []
    for section in re.split(r"^## ", README.read_text(), flags=re.M):
        exports: list[str] = []
        for block in re.findall(r"^```sh\n(.*?)^```", section, flags=re.M | re.S):
            for line in block.splitlines():
                if line.startswith("export "):
                    exports.append(line)
                elif any(program in line for program in PROGRAMS) and re.search(r"manage\.py|gunicorn|celery", line):
                    commands.append(Command(line, tuple(exports)))
    return commands


COMMANDS = readme_commands()


def run(script: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_readme_shows_the_commands_of_each_process():
    shown = {" ".join(command.startup_check()[:4]) for command in COMMANDS}
    assert {
        ".venv/bin/python manage.py run_scheduler --help",
        ".venv/bin/python manage.py migrate --help",
        ".venv/bin/python manage.py setup_periodic_tasks --help",
        ".venv/bin/celery -A edm worker",
        ".venv/bin/celery -A edm beat",
    } <= shown
    assert any(command.startup_check()[0] == ".venv/bin/gunicorn" for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=[command.line.split("#")[0].strip() for command in COMMANDS])
def test_each_command_starts_with_the_environment_shown_and_not_without(command):
    argv = shlex.join([*command.assignments(), *command.startup_check()])
    shown = run("\n".join([*command.exports, argv]))
    assert shown.returncode == 0, shown.stderr
    bare = run(shlex.join(command.startup_check()))
    assert (bare.returncode, bare.stderr) == (1, NO_SECRET_KEY)
