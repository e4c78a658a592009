"""WorkerHeartbeat and TaskWaitMetric leave monitoring's state for queues' (queues 0020).

Their tables are not touched. Their content types follow them, so the
permissions granted on them and their admin history stay attached.
"""

from django.db import migrations

MOVED = ("workerheartbeat", "taskwaitmetric")


def _relabel(apps, schema_editor, source: str, target: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model in MOVED:
        # A fresh database has no content types yet; one made already under the target stays.
        if not ContentType.objects.using(db).filter(app_label=target, model=model).exists():
            ContentType.objects.using(db).filter(app_label=source, model=model).update(app_label=target)


def to_queues(apps, schema_editor) -> None:
    _relabel(apps, schema_editor, "monitoring", "queues")


def to_monitoring(apps, schema_editor) -> None:
    _relabel(apps, schema_editor, "queues", "monitoring")


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0004_heartbeat_progress"),
        ("queues", "0021_heartbeats_and_wait_metrics"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(model_name="taskwaitmetric", name="task"),
                migrations.RemoveField(model_name="taskwaitmetric", name="user"),
                migrations.DeleteModel(name="WorkerHeartbeat"),
                migrations.DeleteModel(name="TaskWaitMetric"),
            ],
        ),
        migrations.RunPython(to_queues, to_monitoring),
    ]
