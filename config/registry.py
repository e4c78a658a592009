"""Every runtime setting, declared once: category, key, type, default, bounds.

Values stored in the database (``ConfigItem``) override the defaults here;
``ConfigManagerService`` validates against these declarations and serves
typed values to every process.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from typing import Any

from common.errors import InputError


class ConfigValidationError(InputError, ValueError):
    """A value that does not fit its declaration; the message says why."""


@dataclass(frozen=True)
class Setting:
    category: str
    key: str
    type: type
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    timezone: bool = False

    @property
    def name(self) -> str:
        return f"{self.category}.{self.key}"

    def clean(self, value: Any) -> Any:
        """Return the value converted to the declared type, or raise ConfigValidationError."""
        value = self._convert(value)
        if self.minimum is not None and value < self.minimum:
            raise ConfigValidationError(f"{self.name} must be at least {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigValidationError(f"{self.name} must be at most {self.maximum}, got {value}")
        if self.choices is not None and value not in self.choices:
            raise ConfigValidationError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        if self.timezone:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ConfigValidationError(
                    f"{self.name} must be a time zone name such as UTC, got {value!r}"
                ) from None
        return value

    def _convert(self, value: Any) -> Any:
        kind = self.type.__name__
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"
            raise ConfigValidationError(f"{self.name} must be true or false, got {value!r}")
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ConfigValidationError(f"{self.name} must be an integer, got {value!r}")
            try:
                number = float(value)
            except ValueError:
                raise ConfigValidationError(f"{self.name} must be an integer, got {value!r}") from None
            if not number.is_integer():
                raise ConfigValidationError(f"{self.name} must be an integer, got {value!r}")
            return int(number)
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ConfigValidationError(f"{self.name} must be a number, got {value!r}")
            try:
                number = float(value)
            except ValueError:
                raise ConfigValidationError(f"{self.name} must be a number, got {value!r}") from None
            if number != number or number in (float("inf"), float("-inf")):
                raise ConfigValidationError(f"{self.name} must be a finite number, got {value!r}")
            return number
        if self.type is str:
            if not isinstance(value, str):
                raise ConfigValidationError(f"{self.name} must be a string, got {value!r}")
            return value
        raise ConfigValidationError(f"{self.name} has an unsupported type {kind}")  # pragma: no cover


_SETTINGS = [
    # --- queue: the scheduler loop ------------------------------------------
    Setting(
        "queue",
        "default_sending_rate",
        float,
        1.0,
        "Seconds between two sends of a service whose own sending_rate is empty.",
        0,
        86400,
    ),
    Setting(
        "queue",
        "max_retries",
        int,
        5,
        "Retries after the first attempt before a transiently failing subtask is failed.",
        0,
        100,
    ),
    Setting(
        "queue",
        "retry_backoff_seconds",
        float,
        60.0,
        "Delay before the first retry; doubles with every further attempt.",
        0,
        86400,
    ),
    Setting("queue", "retry_backoff_max_seconds", float, 3600.0, "Upper bound of the retry delay.", 0, 7 * 86400),
    Setting(
        "queue", "no_service_sleep_seconds", float, 1.0, "Sleep when no service is ready (the plan's 1 s).", 0.01, 300
    ),
    Setting(
        "queue", "no_work_sleep_seconds", float, 2.0, "Sleep when no subtask is claimable (the plan's 2 s).", 0.01, 300
    ),
    Setting(
        "queue",
        "error_sleep_seconds",
        float,
        5.0,
        "Sleep after an unexpected error in the loop (the plan's 5 s).",
        0.01,
        300,
    ),
    Setting(
        "queue",
        "claim_batch_size",
        int,
        50,
        "Most subtasks one claim takes. Larger: less database work per mail; smaller: the order mails "
        "leave in follows the fair rotation more closely across processes.",
        1,
        1000,
    ),
    Setting(
        "queue",
        "send_lease_seconds",
        float,
        120.0,
        "How long a claimed mail may wait in its process for a sender and a connection; not started by then, "
        "it is given back.",
        5,
        3600,
    ),
    Setting(
        "queue",
        "quota_timezone",
        str,
        "UTC",
        "Time zone whose calendar day is the quota day (daily_quota resets at its midnight).",
        timezone=True,
    ),
    Setting(
        "queue",
        "service_failure_threshold",
        int,
        5,
        "Consecutive failed sends after which a service backs off and an alert is raised.",
        1,
        1000,
    ),
    Setting(
        "queue",
        "service_backoff_seconds",
        float,
        30.0,
        "First back-off of a failing service; doubles while it keeps failing.",
        1,
        86400,
    ),
    Setting(
        "queue",
        "service_backoff_max_seconds",
        float,
        900.0,
        "Upper bound of a failing service's back-off.",
        1,
        7 * 86400,
    ),
    # --- recovery ------------------------------------------------------------
    Setting(
        "recovery",
        "stuck_task_minutes",
        float,
        30.0,
        "A task in 'sending' not updated for this long is recovered.",
        1,
        10080,
    ),
    Setting(
        "recovery",
        "subtask_timeout_minutes",
        float,
        10.0,
        "A subtask claimed this long ago without an outcome goes back to the queue (never before three of its "
        "service's timeouts plus a minute: a send still under way is not overlapped).",
        1,
        10080,
    ),
    Setting(
        "recovery",
        "worker_dead_seconds",
        float,
        20.0,
        "A worker whose heartbeat (written every 2 s) is older than this is dead; its claims are recovered at once.",
        6,
        3600,
    ),
    Setting(
        "recovery",
        "unknown_outcome",
        str,
        "retry",
        "What to do with a subtask whose SMTP conversation started but never reported: "
        "retry (same Message-ID) or park (for review).",
        choices=("retry", "park"),
    ),
    Setting(
        "recovery",
        "sweep_seconds",
        float,
        5.0,
        "How often the claims of dead workers are looked for (every scheduler process, or Celery beat).",
        1,
        300,
    ),
    # --- maintenance ---------------------------------------------------------
    Setting(
        "maintenance",
        "attempt_retention_days",
        float,
        30.0,
        "Send attempts older than this are deleted by the hourly prune.",
        1,
        3650,
    ),
    Setting(
        "maintenance",
        "heartbeat_retention_hours",
        float,
        24.0,
        "Heartbeats of schedulers stopped or silent for this long are deleted by the prune.",
        1,
        8760,
    ),
    # --- reputation: bounce and complaint guards (deliverability.reputation) -------
    Setting(
        "reputation",
        "hard_bounce_rate_limit",
        float,
        0.10,
        "Hard bounces per answered send (delivered or refused for good) above which a task is paused and a "
        "service or an owner raises an alert.",
        0,
        1,
    ),
    Setting(
        "reputation",
        "complaint_rate_limit",
        float,
        0.003,
        "Complaints per delivered mail above which a service or an owner raises an alert.",
        0,
        1,
    ),
    Setting(
        "reputation",
        "min_sample",
        int,
        50,
        "Answered sends (delivered mails, for the complaint rate) a task, service or owner needs before a rate "
        "is judged.",
        1,
        1_000_000,
    ),
    Setting(
        "reputation",
        "window_hours",
        int,
        24,
        "The recent window, in hours, over which service and owner rates are counted.",
        1,
        168,
    ),
    Setting(
        "reputation",
        "pause_tasks",
        bool,
        True,
        "Pause a task whose hard-bounce rate passes the limit (off: only the alert).",
    ),
    # --- alerts ------------------------------------------------------------------
    Setting("alerts", "warning_seconds", float, 300.0, "First-send wait that raises a warning.", 1, 604800),
    Setting("alerts", "critical_seconds", float, 600.0, "First-send wait that raises a critical alert.", 1, 604800),
    Setting("alerts", "emergency_seconds", float, 1800.0, "First-send wait that raises an emergency.", 1, 604800),
    Setting(
        "alerts",
        "notify_staff",
        bool,
        False,
        "E-mail active staff users (with an address) when an alert is raised or becomes more severe.",
    ),
    Setting(
        "alerts",
        "notify_min_severity",
        str,
        "critical",
        "The lowest alert severity that e-mails staff (when alerts.notify_staff is on).",
        choices=("info", "warning", "critical", "emergency"),
    ),
]

REGISTRY: dict[tuple[str, str], Setting] = {(s.category, s.key): s for s in _SETTINGS}
CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(s.category for s in _SETTINGS))


def get_setting(category: str, key: str) -> Setting:
    try:
        return REGISTRY[(category, key)]
    except KeyError:
        raise ConfigValidationError(f"unknown setting {category}.{key}") from None
