"""SubTask status ``suppressed``: a recipient on the suppression list, skipped by the claim (choices only, no SQL)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0016_connection_grants"),
    ]

    operations = [
        migrations.AlterField(
            model_name="subtask",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("allocated", "Allocated"),
                    ("processing", "Processing"),
                    ("sent", "Sent"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                    ("parked", "Parked (outcome unknown)"),
                    ("suppressed", "Suppressed"),
                ],
                default="pending",
                max_length=20,
            ),
        ),
    ]
