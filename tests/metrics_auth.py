"""The credential tests send to /metrics and to the schedulers' metrics ports (set in tests/settings.py)."""

import os

METRICS_TOKEN = os.environ["EDM_METRICS_TOKEN"]
METRICS_HEADERS = {"Authorization": f"Bearer {METRICS_TOKEN}"}
# For django.test.Client: client.get("/metrics", **METRICS_AUTH).
METRICS_AUTH = {"HTTP_AUTHORIZATION": f"Bearer {METRICS_TOKEN}"}
