from django.apps import AppConfig


class CommonConfig(AppConfig):
    """Helpers every app may use (admin mixins, API plumbing, ids, the database clock, migration
    operations). It has no models and imports no other project app."""

    name = "common"
    verbose_name = "Common helpers"
