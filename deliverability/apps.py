from django.apps import AppConfig


class DeliverabilityConfig(AppConfig):
    name = "deliverability"
    verbose_name = "Deliverability"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from anymail.signals import tracking

        from deliverability import checks  # noqa: F401  (registers the deployment checks)
        from deliverability.webhooks import tracking_event_received

        tracking.connect(tracking_event_received, dispatch_uid="deliverability.webhooks.tracking_event_received")
