"""The bounce class of each send attempt; why the platform paused a task."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0017_subtask_suppressed"),
    ]

    operations = [
        migrations.AddField(
            model_name="sendattempt",
            name="bounce_class",
            field=models.CharField(
                blank=True,
                choices=[
                    ("", "-"),
                    ("soft", "Soft (temporary)"),
                    ("hard", "Hard (no such address)"),
                    ("policy", "Policy (refused the sender or the content)"),
                    ("failed", "Other permanent failure"),
                ],
                db_default="",
                default="",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="task",
            name="pause_reason",
            field=models.TextField(
                blank=True,
                help_text="Why the task was paused, when the platform paused it (e.g. too many hard bounces).",
            ),
        ),
    ]
