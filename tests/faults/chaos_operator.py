"""The chaos soak's operator: random actions through the admin (a logged-in staff user) and the REST API.

Every action is an HTTP request through Django's test client, exactly as a
browser or an integrator would send it; the answer is classified as done,
refused (a 4xx, or a page that says why) or an error (a 5xx, which no action
may ever produce). Changes to a service's rate or enabled state are written
into the soak's timeline only once the database shows them.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass

from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from config.models import ConfigItem
from queues.models import EmailService, SubTask, Task
from tests.faults.chaos import ServiceTimeline

DONE, REFUSED, ERROR = "done", "refused", "error"


@dataclass(frozen=True)
class Action:
    kind: str
    via: str
    target: str
    status: int
    outcome: str
    detail: str = ""
    said: str = ""  # what the answer told the operator (the API's detail, the admin's messages)

    def line(self) -> str:
        text = f"{self.kind} via {self.via} on {self.target}: HTTP {self.status} {self.outcome} {self.detail}"
        return f"{text.strip()} {self.said!r}" if self.said else text.strip()

    @property
    def bare_refusal(self) -> bool:
        """Refused with nothing for the operator to read."""
        return self.outcome != DONE and self.status >= 400 and not self.said


# Settings an operator may turn while mail flows, and the values tried.
CONFIG_CHOICES = {
    ("queue", "claim_batch_size"): [5, 10, 20],
    ("queue", "no_work_sleep_seconds"): [0.1, 0.2, 0.5],
    ("queue", "retry_backoff_seconds"): [0.2, 0.5, 1.0],
    ("queue", "service_failure_threshold"): [5, 8],
    ("recovery", "unknown_outcome"): ["park", "retry"],
}
# The actions drawn from, as often as each is listed.
KINDS = (
    "pause",
    "resume",
    "resume",
    "cancel",
    "delete_task",
    "delete_user",
    "delete_service",
    "disable",
    "enable",
    "rate",
    "rate",
    "config",
    "config",
)
# Which tasks each task action picks from.
TASK_STATES = {
    "pause": [Task.Status.PENDING, Task.Status.SENDING],
    "resume": [Task.Status.PAUSED],
    "cancel": [Task.Status.PENDING, Task.Status.SENDING, Task.Status.PAUSED],
    "delete_task": list(Task.Status),
}
RATE_CHOICES = [0.05, 0.1, 0.2, 0.3, 0.5, 1.0]


def _no_raise(client: Client) -> Client:
    # A 500 is a finding to report, not an exception that ends the soak.
    client.raise_request_exception = False
    return client


class Operator:
    def __init__(self, staff, timeline: ServiceTimeline, rng: random.Random) -> None:
        self.admin = _no_raise(Client())
        self.admin.force_login(staff)
        self.staff_api = _no_raise(APIClient())
        self.staff_api.force_authenticate(staff)
        self.timeline = timeline
        self.rng = rng
        self.actions: list[Action] = []
        self.deleted_mail: dict[str, str] = {}  # Message-ID -> recipient, of subtasks deleted with their task/user
        self._created = 0

    # --- the random pick --------------------------------------------------------------------------

    def act(self, *, users: list, deletable_users: set, max_disabled: int, pauses: bool = True) -> Action | None:
        kinds = [k for k in KINDS if pauses or k != "pause"]
        kind = self.rng.choice(kinds)
        via = self.rng.choice(["admin", "api"])
        if kind in TASK_STATES:
            if kind == "cancel" and self.rng.random() < 0.7:
                return None  # cancelling is the rarest decision: keep most mail flowing
            tasks = Task.objects.filter(status__in=TASK_STATES[kind]).order_by("created_at")
            if kind == "delete_task":
                # The delete that matters is the one with mail in flight.
                busy = tasks.filter(subtasks__status__in=SubTask.CLAIMED).distinct()
                tasks = busy if busy.exists() else tasks
            tasks = list(tasks)
            if not tasks:
                return None
            task = self.rng.choice(tasks)
            if kind == "delete_task":
                return self.delete_task(task, via)
            return self.task_action(task, kind, via)
        if kind == "delete_user":
            alive = [u for u in users if u.pk in deletable_users and type(u).objects.filter(pk=u.pk).exists()]
            return self.delete_user(self.rng.choice(alive)) if alive else None
        services = list(EmailService.objects.order_by("name"))
        service = self.rng.choice(services)
        if kind == "delete_service":
            return self.delete_service(service, via)
        if kind == "disable":
            if sum(not s.is_enabled for s in services) >= max_disabled or not service.is_enabled:
                return None
            return self.set_enabled(service, False, via)
        if kind == "enable":
            disabled = [s for s in services if not s.is_enabled]
            return self.set_enabled(self.rng.choice(disabled), True, via) if disabled else None
        if kind == "rate":
            if not service.sending_rate:
                return None  # the unspaced service stays so until its planned change
            return self.set_rate(service, self.rng.choice(RATE_CHOICES), via)
        (category, key), values = self.rng.choice(list(CONFIG_CHOICES.items()))
        return self.set_config(category, key, self.rng.choice(values), via)

    # --- tasks and users -------------------------------------------------------------------------

    def task_action(self, task: Task, kind: str, via: str) -> Action:
        before = Task.objects.filter(pk=task.pk).values_list("status", flat=True).first()
        if via == "admin":
            response = self.admin.post(
                reverse("admin:queues_task_changelist"),
                {"action": f"{kind}_tasks", "_selected_action": [str(task.pk)]},
                follow=True,
            )
        else:
            response = self._owner_api(task.owner).post(f"/api/tasks/{task.pk}/{kind}/")
        after = Task.objects.filter(pk=task.pk).values_list("status", flat=True).first()
        detail = f"{before} -> {after}"
        return self._note(kind, via, f"task {task.name}", response, changed=after != before, detail=detail)

    def resume_all(self) -> Action | None:
        """The admin's resume action on every paused task at once."""
        paused = [str(pk) for pk in Task.objects.filter(status=Task.Status.PAUSED).values_list("pk", flat=True)]
        if not paused:
            return None
        response = self.admin.post(
            reverse("admin:queues_task_changelist"), {"action": "resume_tasks", "_selected_action": paused}, follow=True
        )
        left = Task.objects.filter(pk__in=paused, status=Task.Status.PAUSED).count()
        return self._note("resume", "admin", f"{len(paused)} paused tasks", response, changed=not left)

    def delete_task(self, task: Task, via: str) -> Action:
        mail = dict(SubTask.objects.filter(task=task).values_list("message_id", "recipient_email"))
        in_flight = SubTask.objects.filter(task=task, status__in=SubTask.CLAIMED).count()
        if via == "admin":
            url = reverse("admin:queues_task_delete", args=[task.pk])
            response = self.admin.post(url, {"post": "yes"}, follow=True)
        else:
            response = self._owner_api(task.owner).delete(f"/api/tasks/{task.pk}/")
        gone = not Task.objects.filter(pk=task.pk).exists()
        if gone:
            self.deleted_mail.update(mail)
        detail = f"{in_flight} in flight, {'deleted' if gone else 'kept'}"
        return self._note("delete_task", via, f"task {task.name}", response, changed=gone, detail=detail)

    def delete_user(self, user) -> Action:
        mail = dict(SubTask.objects.filter(owner=user).values_list("message_id", "recipient_email"))
        in_flight = SubTask.objects.filter(owner=user, status__in=SubTask.CLAIMED).count()
        url = reverse("admin:accounts_user_delete", args=[user.pk])
        response = self.admin.post(url, {"post": "yes"}, follow=True)
        gone = not type(user).objects.filter(pk=user.pk).exists()
        if gone:
            self.deleted_mail.update(mail)
        detail = f"{in_flight} in flight, {'deleted' if gone else 'kept'}"
        return self._note("delete_user", "admin", f"user {user.username}", response, changed=gone, detail=detail)

    def delete_service(self, service: EmailService, via: str) -> Action:
        in_flight = SubTask.objects.filter(service=service, status__in=SubTask.CLAIMED).count()
        if via == "admin":
            url = reverse("admin:queues_emailservice_delete", args=[service.pk])
            response = self.admin.post(url, {"post": "yes"}, follow=True)
        else:
            response = self.staff_api.delete(f"/api/services/{service.pk}/")
        gone = not EmailService.objects.filter(pk=service.pk).exists()
        detail = f"{in_flight} in flight, {'deleted' if gone else 'kept'}"
        return self._note("delete_service", via, service.name, response, changed=gone, detail=detail)

    def create_task(self, owner, recipients: int) -> Action:
        self._created += 1
        n = self._created
        body = {
            "name": f"soak top-up {n}",
            "subject": "Top-up {{ contact.first_name }}",
            "body_text": "More mail for {{ contact.first_name }}",
            "recipients": [
                {"email": f"t{n}-{i}@{owner.username}.example", "first_name": f"T{i}"} for i in range(recipients)
            ],
        }
        response = self._owner_api(owner).post("/api/tasks/", body, format="json")
        return self._note("create_task", "api", f"user {owner.username}", response, changed=response.status_code == 201)

    # --- services and configuration -----------------------------------------------------------------

    def set_enabled(self, service: EmailService, enabled: bool, via: str) -> Action:
        verb = "enable" if enabled else "disable"
        before = time.time()
        if via == "admin":
            response = self.admin.post(
                reverse("admin:queues_emailservice_changelist"),
                {"action": f"{verb}_services", "_selected_action": [str(service.pk)]},
                follow=True,
            )
        else:
            response = self.staff_api.post(f"/api/services/{service.pk}/{verb}/")
        after = time.time()
        changed = EmailService.objects.filter(pk=service.pk, is_enabled=enabled).exists()
        if changed:
            self.timeline.enabled_changed(service.from_email, enabled, before, after)
        return self._note(verb, via, service.name, response, changed=changed)

    def set_rate(self, service: EmailService, rate: float, via: str) -> Action:
        before = time.time()
        if via == "admin":
            url = reverse("admin:queues_emailservice_change", args=[service.pk])
            response = self.admin.post(url, self._service_form(service, sending_rate=str(rate)), follow=True)
        else:
            response = self.staff_api.patch(f"/api/services/{service.pk}/", {"sending_rate": rate}, format="json")
        after = time.time()
        changed = EmailService.objects.filter(pk=service.pk, sending_rate=rate).exists()
        if changed:
            self.timeline.rate_changed(service.from_email, rate, before, after)
        target = f"{service.name} -> {rate:g} s"
        return self._note("rate", via, target, response, changed=changed)

    @staticmethod
    def _service_form(service: EmailService, **fields: str) -> dict[str, str]:
        """The admin change form as posted from the page showing the service as it is now."""
        form = {
            "name": service.name,
            "from_email": service.from_email,
            "transport": service.transport,
            "host": service.host,
            "port": str(service.port),
            "security": service.security,
            "timeout": str(service.timeout),
            "username": service.username,
            "password": "",
            "backend_path": service.backend_path,
            "backend_options": "",
            "sending_rate": "" if service.sending_rate is None else str(service.sending_rate),
            "max_connections": str(service.max_connections),
            "daily_quota": str(service.daily_quota),
            **fields,
        }
        if service.is_enabled:
            form["is_enabled"] = "on"
        return form

    def set_config(self, category: str, key: str, value, via: str) -> Action:
        if via == "admin":
            item = ConfigItem.objects.filter(category=category, key=key).first()
            raw = json.dumps(value)
            if item is None:
                url = reverse("admin:config_configitem_add")
                response = self.admin.post(url, {"setting": f"{category}.{key}", "value": raw}, follow=True)
            else:
                url = reverse("admin:config_configitem_change", args=[item.pk])
                response = self.admin.post(url, {"value": raw}, follow=True)
        else:
            response = self.staff_api.put(f"/api/config/{category}/{key}/", {"value": value}, format="json")
        changed = ConfigItem.objects.filter(category=category, key=key, value=value).exists()
        target = f"{category}.{key} = {value}"
        return self._note("config", via, target, response, changed=changed)

    # --- bookkeeping -----------------------------------------------------------------------------------

    def _owner_api(self, owner) -> APIClient:
        client = _no_raise(APIClient())
        client.force_authenticate(owner)
        return client

    @staticmethod
    def _said(response) -> str:
        """What the answer told the operator: the API's detail, or the admin's messages."""
        if response.status_code >= 500:
            return ""
        if response.get("Content-Type", "").startswith("application/json"):
            try:
                data = response.json()
            except ValueError:
                return ""
            return str(data.get("detail", ""))[:160] if isinstance(data, dict) else ""
        context = getattr(response, "context", None)
        if context is not None:
            # The admin's delete page explains a refusal on the page itself, other pages in messages.
            reasons = [(k, context.get(k)) for k in ("protected", "perms_lacking")]
            said = [f"{k}: {', '.join(map(str, objects))}" for k, objects in reasons if objects]
            said = said or [str(m) for m in context.get("messages", [])]
        elif getattr(response, "wsgi_request", None) is not None:
            said = [str(m) for m in get_messages(response.wsgi_request)]
        else:
            said = []
        return re.sub(r"<[^>]+>", "", " | ".join(said))[:160]

    def _note(self, kind: str, via: str, target: str, response, *, changed: bool, detail: str = "") -> Action:
        code = response.status_code
        if code >= 500:
            outcome = ERROR
        elif code < 400 and changed:
            outcome = DONE
        else:
            outcome = REFUSED
        action = Action(kind, via, target, code, outcome, detail, self._said(response))
        self.actions.append(action)
        return action
