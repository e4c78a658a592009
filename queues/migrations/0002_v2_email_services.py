"""V2 email services: precomputed availability replaces the frozen flag.

The plan's ALTER TABLE: add last_sent_at, next_available_at, total_sent,
success_rate and avg_response_time (plus the transport settings V2 needs),
carry each service's frozen state into next_available_at, then drop
is_frozen and frozen_until. Reversible: going back recomputes the frozen
state from next_available_at.
"""

from decimal import Decimal

from django.db import migrations, models
from django.db.models import F, Q
from django.utils import timezone


def carry_frozen_state(apps, schema_editor):
    EmailService = apps.get_model("queues", "EmailService")
    # Frozen until T: unavailable until T. An expired freeze (T in the past)
    # carries over too and simply reads as "ready".
    EmailService.objects.filter(is_frozen=True, frozen_until__isnull=False).update(next_available_at=F("frozen_until"))
    # Frozen with no end date meant "until an operator unfreezes it": the V2
    # way to say that is a disabled service.
    EmailService.objects.filter(is_frozen=True, frozen_until__isnull=True).update(is_enabled=False)
    # V1 never enforced these; the V2 constraints below would refuse the rows.
    EmailService.objects.filter(used_quota__lt=0).update(used_quota=0)
    EmailService.objects.filter(daily_quota__lt=0).update(daily_quota=0)
    EmailService.objects.filter(sending_rate__lt=0).update(sending_rate=0)


def restore_frozen_state(apps, schema_editor):
    EmailService = apps.get_model("queues", "EmailService")
    now = timezone.now()
    EmailService.objects.filter(next_available_at__gt=now).update(is_frozen=True, frozen_until=F("next_available_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0001_v1_baseline"),
    ]

    operations = [
        # The plan's five columns.
        migrations.AddField(
            model_name="emailservice",
            name="last_sent_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="emailservice",
            name="next_available_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="emailservice",
            name="total_sent",
            field=models.IntegerField(default=0),
        ),
        migrations.AddField(
            model_name="emailservice",
            name="success_rate",
            field=models.DecimalField(decimal_places=2, default=Decimal("100.00"), max_digits=5),
        ),
        migrations.AddField(
            model_name="emailservice",
            name="avg_response_time",
            field=models.IntegerField(default=0, help_text="Milliseconds."),
        ),
        # What V2 adds beyond the plan: failure counts, the quota day, and
        # transports other than plain SMTP.
        migrations.AddField(
            model_name="emailservice",
            name="total_failed",
            field=models.IntegerField(default=0),
        ),
        migrations.AddField(
            model_name="emailservice",
            name="quota_date",
            field=models.DateField(blank=True, help_text="The quota day that used_quota counts for.", null=True),
        ),
        migrations.AddField(
            model_name="emailservice",
            name="transport",
            field=models.CharField(
                choices=[("smtp", "SMTP account"), ("backend", "Django e-mail backend")],
                default="smtp",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="emailservice",
            name="timeout",
            field=models.FloatField(default=10.0, help_text="SMTP socket timeout in seconds."),
        ),
        migrations.AddField(
            model_name="emailservice",
            name="backend_path",
            field=models.CharField(
                blank=True,
                help_text="Dotted path of a Django e-mail backend, e.g. anymail.backends.mailgun.EmailBackend.",
                max_length=255,
            ),
        ),
        migrations.AddField(
            model_name="emailservice",
            name="backend_options",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name="emailservice",
            name="sending_rate",
            field=models.FloatField(
                blank=True,
                help_text="Seconds between two sends; empty means the queue.default_sending_rate setting.",
                null=True,
            ),
        ),
        migrations.RunPython(carry_frozen_state, restore_frozen_state),
        migrations.RemoveField(model_name="emailservice", name="is_frozen"),
        migrations.RemoveField(model_name="emailservice", name="frozen_until"),
        migrations.AddConstraint(
            model_name="emailservice",
            constraint=models.CheckConstraint(condition=Q(daily_quota__gte=0), name="email_services_daily_quota_gte_0"),
        ),
        migrations.AddConstraint(
            model_name="emailservice",
            constraint=models.CheckConstraint(condition=Q(used_quota__gte=0), name="email_services_used_quota_gte_0"),
        ),
        migrations.AddConstraint(
            model_name="emailservice",
            constraint=models.CheckConstraint(
                condition=Q(sending_rate__gte=0), name="email_services_sending_rate_gte_0"
            ),
        ),
        migrations.AddConstraint(
            model_name="emailservice",
            constraint=models.CheckConstraint(
                condition=Q(success_rate__gte=0) & Q(success_rate__lte=100),
                name="email_services_success_rate_0_100",
            ),
        ),
    ]
