"""WorkerHeartbeat and TaskWaitMetric moved from monitoring to queues without touching their tables."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("queues", "0020_encrypted_credentials"), ("monitoring", "0004_heartbeat_progress")]
AFTER = [("queues", "0021_heartbeats_and_wait_metrics"), ("monitoring", "0005_heartbeats_and_wait_metrics_to_queues")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.fixture
def back_to_latest():
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_rows_and_content_types_follow_the_models_to_queues_and_back(back_to_latest):
    apps = migrate(BEFORE)
    now = timezone.now().replace(microsecond=0)
    user = apps.get_model("accounts", "User").objects.create(username="alice")
    task = apps.get_model("queues", "Task").objects.create(owner=user, name="news", subject="Hi", body_text="x")
    apps.get_model("monitoring", "WorkerHeartbeat").objects.create(
        worker_id="host:1", hostname="host", pid=1, started_at=now, last_seen_at=now, sent=7
    )
    metric_id = uuid.uuid4()
    apps.get_model("monitoring", "TaskWaitMetric").objects.create(
        id=metric_id, task_id=task.pk, user_id=user.pk, queue_entry_time=now - dt.timedelta(seconds=30)
    )
    ContentType = apps.get_model("contenttypes", "ContentType")
    heartbeat_type = ContentType.objects.get_or_create(app_label="monitoring", model="workerheartbeat")[0]

    apps = migrate(AFTER)
    heartbeat = apps.get_model("queues", "WorkerHeartbeat").objects.get()
    assert (heartbeat.worker_id, heartbeat.sent, heartbeat.started_at) == ("host:1", 7, now)
    metric = apps.get_model("queues", "TaskWaitMetric").objects.get()
    assert (metric.pk, metric.task_id, metric.queue_entry_time) == (metric_id, task.pk, now - dt.timedelta(seconds=30))
    assert ContentType.objects.get(pk=heartbeat_type.pk).app_label == "queues"
    assert not ContentType.objects.filter(app_label="monitoring", model__in=["workerheartbeat", "taskwaitmetric"])

    apps = migrate(BEFORE)
    assert apps.get_model("monitoring", "WorkerHeartbeat").objects.get().sent == 7
    assert apps.get_model("monitoring", "TaskWaitMetric").objects.get().pk == metric_id
    assert ContentType.objects.get(pk=heartbeat_type.pk).app_label == "monitoring"
