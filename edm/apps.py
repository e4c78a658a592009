from django.contrib.admin.apps import AdminConfig


class EdmAdminConfig(AdminConfig):
    """django.contrib.admin with the project's site (edm.admin.EdmAdminSite) as admin.site."""

    default_site = "edm.admin.EdmAdminSite"
