"""The project's admin site: Django's, plus the staff monitoring dashboard at /admin/dashboard/."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path

from monitoring.dashboard import dashboard_view


class EdmAdminSite(admin.AdminSite):
    site_header = "EDM administration"
    site_title = "EDM admin"
    index_template = "admin/edm_index.html"

    def get_urls(self) -> list[URLPattern | URLResolver]:
        # admin_view: staff only (others go to the login page), never cached.
        return [path("dashboard/", self.admin_view(self.dashboard), name="dashboard"), *super().get_urls()]

    def dashboard(self, request: HttpRequest) -> TemplateResponse:
        return dashboard_view(request, site=self)
