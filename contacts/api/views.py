"""Contacts and tags of the calling user (see OwnerScopedMixin for who sees what)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiRequest, extend_schema, extend_schema_view
from rest_framework import exceptions, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.parsers import CSVTextParser, csv_import_text
from common.api.scoping import OwnerScopedMixin
from contacts.api import serializers
from contacts.api.filters import ContactFilter, TagFilter
from contacts.csv_import import contacts_import_csv
from contacts.exceptions import ContactNotFound
from contacts.models import Contact, Tag
from contacts.services import contact_delete, tag_remove_contacts
from contacts.tag_manager import ContactTagManager

UUID_PATTERN = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


@extend_schema_view(
    list=extend_schema(summary="Your contacts"),
    create=extend_schema(summary="Add a contact (the address must be new to your address book)"),
    destroy=extend_schema(summary="Delete a contact; it leaves every tag that held it"),
)
class ContactViewSet(OwnerScopedMixin, viewsets.ModelViewSet):
    """Your address book; writes go through contacts.services."""

    queryset = Contact.objects.all()
    serializer_class = serializers.ContactSerializer
    filterset_class = ContactFilter
    ordering_fields = ["email", "first_name", "last_name", "created_at", "updated_at"]
    ordering = ["email"]

    def perform_destroy(self, instance: Contact) -> None:
        contact_delete(contact=instance)

    @extend_schema(
        summary="Import contacts from CSV",
        description=(
            "A multipart upload (field `file`) or a `text/csv` body. The header row names the columns: "
            "`email` (required), `first_name`, `last_name`; other named columns become attributes. "
            "Known addresses are updated (empty cells keep the stored value), new ones created; "
            "bad rows are reported and skipped. A file that cannot be read at all is a 400 and changes nothing."
        ),
        request={
            "multipart/form-data": serializers.ContactImportUploadSerializer,
            "text/csv": OpenApiRequest(OpenApiTypes.BINARY),
        },
        responses={200: serializers.ContactImportResultSerializer},
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="import",
        parser_classes=[MultiPartParser, CSVTextParser],
        filter_backends=[],
        pagination_class=None,
    )
    def import_csv(self, request: Request) -> Response:
        result = contacts_import_csv(
            owner=request.user, text=csv_import_text(request, serializers.ContactImportUploadSerializer)
        )
        body = {"created": result.created, "updated": result.updated, "errors": result.errors}
        return Response(serializers.ContactImportResultSerializer(body).data)


@extend_schema_view(
    list=extend_schema(summary="Your tags"),
    destroy=extend_schema(summary="Delete a tag (its contacts stay)"),
)
class TagViewSet(OwnerScopedMixin, viewsets.ModelViewSet):
    """Tags and their membership; membership changes go through ContactTagManager."""

    queryset = Tag.objects.all()
    serializer_class = serializers.TagSerializer
    filterset_class = TagFilter
    ordering_fields = ["name", "created_at", "updated_at"]
    ordering = ["name"]

    @extend_schema(
        methods=["GET"],
        summary="The tag's contacts",
        responses={200: serializers.ContactSerializer(many=True)},
    )
    @extend_schema(
        methods=["POST"],
        summary="Add contacts to the tag (all or nothing)",
        request=serializers.TagContactIdsSerializer,
        responses={200: serializers.TagAddResultSerializer},
    )
    @action(detail=True, methods=["get", "post"], url_path="contacts", filter_backends=[])
    def contacts(self, request: Request, pk: str | None = None) -> Response:
        tag = self.get_object()
        if request.method == "GET":
            members = ContactTagManager().contacts_of_tag(tag.pk).order_by("email", "pk")
            page = self.paginate_queryset(members)
            return self.get_paginated_response(serializers.ContactSerializer(page, many=True).data)
        ids = self._contact_ids(request)
        with _unknown_contact_is_bad_input():
            added = ContactTagManager().add_contacts_to_tag(tag.pk, ids)
        return Response({"added": added, "contact_count": self._count(tag)})

    @extend_schema(
        summary="Remove contacts from the tag (all or nothing)",
        request=serializers.TagContactIdsSerializer,
        responses={200: serializers.TagRemoveResultSerializer},
    )
    @action(detail=True, methods=["post"], url_path="contacts/remove", filter_backends=[], pagination_class=None)
    def remove_contacts(self, request: Request, pk: str | None = None) -> Response:
        tag = self.get_object()
        ids = self._contact_ids(request)
        with _unknown_contact_is_bad_input():
            removed = tag_remove_contacts(tag=tag, contact_ids=ids)
        return Response({"removed": removed, "contact_count": self._count(tag)})

    @extend_schema(
        summary="Remove one contact from the tag",
        parameters=[OpenApiParameter("contact_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        request=None,
        responses={204: None},
    )
    @action(
        detail=True,
        methods=["delete"],
        url_path=rf"contacts/(?P<contact_id>{UUID_PATTERN})",
        filter_backends=[],
        pagination_class=None,
    )
    def remove_contact(self, request: Request, pk: str | None = None, contact_id: str = "") -> Response:
        tag = self.get_object()
        try:
            ContactTagManager().remove_contact_from_tag(tag.pk, uuid.UUID(contact_id))
        except ContactNotFound:
            raise exceptions.NotFound("no such contact") from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _contact_ids(request: Request) -> list[uuid.UUID]:
        payload = serializers.TagContactIdsSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return payload.validated_data["contact_ids"]

    @staticmethod
    def _count(tag: Tag) -> int:
        return len(Tag.objects.values_list("contacts", flat=True).get(pk=tag.pk) or [])


@contextmanager
def _unknown_contact_is_bad_input() -> Iterator[None]:
    """A contact id in the body that is not the caller's is invalid input (400), not a missing URL (404)."""
    try:
        yield
    except ContactNotFound as exc:
        raise exceptions.ValidationError({"contact_ids": [f"{exc.contact_id} is not one of your contacts"]}) from None
