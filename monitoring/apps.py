from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The queue figures join django-prometheus's /metrics; the collector only
        # reads the database when scraped, never at start-up.
        from monitoring import checks  # noqa: F401  (registers the deployment checks)
        from monitoring.metrics import register_queue_collector
        from monitoring.receivers import connect_receivers
        from monitoring.sweeps import register_sweeps

        register_queue_collector()
        # The queue and the reputation guards announce; monitoring raises the alerts
        # and runs its sweeps with theirs (they never import monitoring).
        connect_receivers()
        register_sweeps()
