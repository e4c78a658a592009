from django.apps import AppConfig


class ContactsConfig(AppConfig):
    name = "contacts"
    verbose_name = "Contacts and tags"
    default_auto_field = "django.db.models.BigAutoField"
