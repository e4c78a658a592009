"""Everything under /api/: each app's routes, the OpenAPI schema and its docs page."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from edm.api.auth import TokenView

urlpatterns = [
    path("", include("queues.api.urls")),
    path("", include("contacts.api.urls")),
    path("", include("config.api.urls")),
    path("", include("monitoring.api.urls")),
    path("", include("deliverability.api.urls")),
    path("", include("deliverability.api.reputation_urls")),
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path(
        "redoc/",
        SpectacularRedocView.as_view(url_name="api-schema", template_name="api/redoc.html"),
        name="api-redoc",
    ),
]
