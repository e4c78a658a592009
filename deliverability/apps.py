from django.apps import AppConfig


class DeliverabilityConfig(AppConfig):
    name = "deliverability"
    verbose_name = "Deliverability"
    default_auto_field = "django.db.models.BigAutoField"
