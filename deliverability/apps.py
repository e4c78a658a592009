from django.apps import AppConfig


class DeliverabilityConfig(AppConfig):
    name = "deliverability"
    verbose_name = "Deliverability"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from deliverability import checks  # noqa: F401  (registers the deployment checks)
