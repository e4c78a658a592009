#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "edm.settings")
    # Before Django's own handling, which turns a settings error into a
    # traceback (or, for --help, a note and exit status 0).
    from edm.startup import env_errors_exit, load_settings_or_exit

    load_settings_or_exit()
    from django.core.management import execute_from_command_line

    with env_errors_exit():
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
