"""The Celery application. Without CELERY_BROKER_URL/REDIS_URL tasks run eagerly."""

import os

from celery import Celery

from edm.startup import load_settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "edm.settings")
# Celery reads the settings lazily, when the worker or beat first needs them,
# and would print a traceback there: check them as `celery -A edm` imports us.
load_settings_or_exit()

app = Celery("edm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
