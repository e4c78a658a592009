from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from contacts.models import Contact, Tag
from contacts.services import contact_delete, contacts_delete


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ("email", "first_name", "last_name", "owner", "created_at")
    list_filter = ("created_at",)
    search_fields = ("email", "first_name", "last_name", "owner__username")
    list_select_related = ("owner",)
    raw_id_fields = ("owner",)
    date_hierarchy = "created_at"

    # Deleted as the API deletes them: out of their tags, rows locked first (contacts_delete).
    def delete_model(self, request: HttpRequest, obj: Contact) -> None:
        contact_delete(contact=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        contacts_delete(contacts=queryset)


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "contact_count", "updated_at")
    search_fields = ("name", "owner__username")
    list_select_related = ("owner",)
    raw_id_fields = ("owner",)
    # Membership changes go through ContactTagManager (atomic), never a form.
    readonly_fields = ("contacts",)

    @admin.display(description="contacts")
    def contact_count(self, tag: Tag) -> int:
        return tag.contact_count
