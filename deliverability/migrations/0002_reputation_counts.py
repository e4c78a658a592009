"""Hourly outcome counts per service and per owner, each task's bounce tally, and an index for complaint rates."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("deliverability", "0001_initial"),
        ("queues", "0016_connection_grants"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="OwnerReputationHour",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("hour", models.DateTimeField(help_text="The start of the hour.")),
                (
                    "answered",
                    models.PositiveIntegerField(default=0, help_text="Sends that got a final answer: sent or refused."),
                ),
                ("sent", models.PositiveIntegerField(default=0)),
                ("hard_bounces", models.PositiveIntegerField(default=0)),
                ("policy_rejections", models.PositiveIntegerField(default=0)),
            ],
            options={
                "db_table": "owner_reputation_hours",
                "ordering": ["-hour", "owner"],
            },
        ),
        migrations.CreateModel(
            name="ServiceReputationHour",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("hour", models.DateTimeField(help_text="The start of the hour.")),
                (
                    "answered",
                    models.PositiveIntegerField(default=0, help_text="Sends that got a final answer: sent or refused."),
                ),
                ("sent", models.PositiveIntegerField(default=0)),
                ("hard_bounces", models.PositiveIntegerField(default=0)),
                ("policy_rejections", models.PositiveIntegerField(default=0)),
            ],
            options={
                "db_table": "service_reputation_hours",
                "ordering": ["-hour", "service"],
            },
        ),
        migrations.CreateModel(
            name="TaskBounceTally",
            fields=[
                (
                    "task",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="queues.task",
                    ),
                ),
                ("answered", models.PositiveIntegerField(default=0)),
                ("hard_bounces", models.PositiveIntegerField(default=0)),
                ("checked_answered", models.PositiveIntegerField(default=0)),
                ("checked_hard_bounces", models.PositiveIntegerField(default=0)),
            ],
            options={
                "db_table": "task_bounce_tallies",
            },
        ),
        migrations.AddIndex(
            model_name="suppression",
            index=models.Index(
                condition=models.Q(("reason", "complaint")), fields=["created_at"], name="idx_suppressions_complaints"
            ),
        ),
        migrations.AddField(
            model_name="ownerreputationhour",
            name="owner",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="+", to=settings.AUTH_USER_MODEL
            ),
        ),
        migrations.AddField(
            model_name="servicereputationhour",
            name="service",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="queues.emailservice"
            ),
        ),
        migrations.AddIndex(
            model_name="ownerreputationhour",
            index=models.Index(fields=["hour"], name="idx_owner_reputation_hour"),
        ),
        migrations.AddConstraint(
            model_name="ownerreputationhour",
            constraint=models.UniqueConstraint(fields=("owner", "hour"), name="uniq_owner_reputation_hours"),
        ),
        migrations.AddConstraint(
            model_name="servicereputationhour",
            constraint=models.UniqueConstraint(fields=("hour", "service"), name="uniq_service_reputation_hours"),
        ),
    ]
