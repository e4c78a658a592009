from django.contrib import admin
from django.urls import include, path

from deliverability.views import unsubscribe_view
from monitoring.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("edm.api.urls")),
    path("metrics", metrics_view, name="prometheus-django-metrics"),
    # ESP tracking webhooks (bounces, complaints, unsubscribes): deliverability/webhook_urls.py.
    path("webhooks/anymail/", include("deliverability.webhook_urls")),
    # deliverability.unsubscribe.PATH: the links in sent mail point here.
    path("u/<str:token>/", unsubscribe_view, name="unsubscribe"),
]

handler400 = "common.api.errors.bad_request"
handler404 = "common.api.errors.not_found"
handler500 = "common.api.errors.server_error"
