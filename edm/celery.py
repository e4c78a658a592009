"""The Celery application. Without CELERY_BROKER_URL/REDIS_URL tasks run eagerly."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "edm.settings")

app = Celery("edm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
