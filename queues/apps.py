from django.apps import AppConfig
from django.db.models.signals import post_save


def _service_saved(sender, **kwargs) -> None:
    # A service added or edited (admin, API) may make waiting work sendable:
    # wake idle schedulers when the save commits (queues.wakeup).
    from queues.wakeup import notify_work

    notify_work()


class QueuesConfig(AppConfig):
    name = "queues"
    verbose_name = "Sending queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from anymail.signals import tracking

        from queues.esp_events import tracking_event_received
        from queues.models import EmailService

        # ESP webhooks: an event about mail sent here may suppress its recipient.
        tracking.connect(tracking_event_received, dispatch_uid="queues.esp_events.tracking_event_received")
        post_save.connect(_service_saved, sender=EmailService, dispatch_uid="queues.service_saved_wakes_schedulers")
