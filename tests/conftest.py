from __future__ import annotations

import pytest
from django.db import connection

from tests import factories

# Every factory as two fixtures: ``<name>_factory`` (the class, to build
# many or customise) and ``<name>`` (one saved instance with defaults).
_FACTORIES = {
    "user": factories.UserFactory,
    "contact": factories.ContactFactory,
    "tag": factories.TagFactory,
    "email_service": factories.EmailServiceFactory,
    "task": factories.TaskFactory,
    "subtask": factories.SubTaskFactory,
    "task_wait_metric": factories.TaskWaitMetricFactory,
    "config_item": factories.ConfigItemFactory,
}


def _make_fixtures(name: str, factory_class: type) -> None:
    def factory_fixture(db):
        return factory_class

    def instance_fixture(db):
        return factory_class()

    factory_fixture.__name__ = f"{name}_factory"
    instance_fixture.__name__ = name
    globals()[f"{name}_factory"] = pytest.fixture(factory_fixture, name=f"{name}_factory")
    globals()[name] = pytest.fixture(instance_fixture, name=name)


for _name, _factory in _FACTORIES.items():
    _make_fixtures(_name, _factory)


def pytest_collection_modifyitems(config, items):
    """Skip PostgreSQL-only tests when the suite runs on SQLite (the one allowed skip)."""
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: run with DATABASE_URL=postgres://...")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_config_cache():
    """Every test starts without cached config values (they are cached per process for 1 s)."""
    from config.services import ConfigManagerService

    ConfigManagerService.invalidate()
    yield
    ConfigManagerService.invalidate()


@pytest.fixture
def smtp_sink():
    """A real SMTP server (aiosmtpd) on a free port, recording every message."""
    from queues.sink import SmtpSink

    sink = SmtpSink().start()
    yield sink
    sink.shutdown()


@pytest.fixture
def queue_config(db):
    """Set queue.* settings for the test: ``queue_config(max_retries=1, ...)``."""
    from config.services import ConfigManagerService

    def apply(**values):
        for key, value in values.items():
            ConfigManagerService.set_config("queue", key, value)
        return ConfigManagerService.get_config_by_category("queue")

    return apply


@pytest.fixture
def schedulers(tmp_path):
    from tests.schedulers import Schedulers

    group = Schedulers(tmp_path)
    yield group
    group.stop()


def pytest_terminal_summary(terminalreporter):
    """The fault-injection scenarios' table (tests/faults), when any ran."""
    from tests.faults.harness import HEADER, REPORT, format_row

    if not REPORT:
        return
    terminalreporter.section("fault injection")
    terminalreporter.write_line(HEADER)
    for row in REPORT:
        terminalreporter.write_line(format_row(row))
