"""The suppression list over the API: your own, or (staff, ``?scope=platform``) the platform-wide one.

Another owner's entries are never seen (a 404, as for their tasks); the
platform-wide list is staff's to read and change, plain users get a 403.
"""

from __future__ import annotations

import json
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiRequest, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from common.api.filters import refuse_empty
from common.api.parsers import CSVTextParser, csv_import_text
from common.api.scoping import PARSERS
from deliverability.api import serializers
from deliverability.api.filters import SuppressionFilter
from deliverability.models import Suppression
from deliverability.suppression_csv import suppressions_export_csv, suppressions_import_csv
from deliverability.suppressions import suppression_add, suppression_remove

SOURCE = "api"
SCOPES = ("own", "platform")
SCOPE = OpenApiParameter(
    "scope",
    OpenApiTypes.STR,
    OpenApiParameter.QUERY,
    enum=SCOPES,
    description="own (default): your list. platform: the platform-wide list, applied to everyone's mail (staff only).",
)


class CSVRenderer(BaseRenderer):
    """Lets a client ask for text/csv; the export streams its own response, so only errors pass through here."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: dict | None = None) -> bytes:
        return json.dumps(data).encode()


@extend_schema_view(
    list=extend_schema(summary="Your suppressed addresses (or the platform's)", parameters=[SCOPE]),
    retrieve=extend_schema(summary="One suppressed address", parameters=[SCOPE]),
    destroy=extend_schema(summary="Take an address off the list: mail goes to it again", parameters=[SCOPE]),
)
class SuppressionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Addresses the scheduler never sends to: checked at every claim, whenever they were added."""

    parser_classes = PARSERS
    # Documented as a 403 of every operation (common.api.schema).
    forbidden_reason = "the platform-wide list (scope=platform) is staff only"
    queryset = Suppression.objects.all()
    serializer_class = serializers.SuppressionSerializer
    filterset_class = SuppressionFilter
    ordering_fields = ["created_at", "email", "reason", "source"]
    ordering = ["-created_at", "id"]

    def owner_id(self) -> Any:
        """The list this request works on: the caller's, or None for the platform's (staff only)."""
        scope = self.request.query_params.get("scope", "own")
        if scope not in SCOPES:
            raise exceptions.ValidationError({"scope": [f"one of {', '.join(SCOPES)}"]})
        if scope == "own":
            return self.request.user.pk
        if not self.request.user.is_staff:
            raise exceptions.PermissionDenied("only staff manage the platform-wide list")
        return None

    def get_queryset(self) -> QuerySet[Suppression]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Suppression.objects.none()
        return super().get_queryset().filter(owner_id=self.owner_id())  # None: owner IS NULL

    @extend_schema(
        summary="Suppress an address (idempotent)",
        description=(
            "201 with the new entry; 200 with the existing one when the address is already on the list "
            "(it keeps its first reason). From the next claim on, no mail goes to it, in tasks already "
            "queued too."
        ),
        parameters=[SCOPE],
        request=serializers.SuppressionCreateSerializer,
        responses={201: serializers.SuppressionSerializer, 200: serializers.SuppressionSerializer},
    )
    def create(self, request: Request) -> Response:
        owner_id = self.owner_id()
        payload = serializers.SuppressionCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        entry, created = suppression_add(owner_id=owner_id, source=SOURCE, **payload.validated_data)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(self.get_serializer(entry).data, status=code)

    def perform_destroy(self, instance: Suppression) -> None:
        suppression_remove(entry=instance)

    @extend_schema(
        summary="Suppress the addresses of a CSV file",
        description=(
            "A multipart upload (field `file`) or a `text/csv` body: one address per line, `email[,reason]` "
            "(reason empty: manual). A first row naming an `email` column is a header; the columns are then "
            "taken by name (`email`, `reason`, `detail`; others ignored), so an export imports as it is. "
            "Bad lines are counted and skipped (the first 100 reported); a file that cannot be read is a 400 "
            "and adds nothing."
        ),
        parameters=[SCOPE],
        request={
            "multipart/form-data": serializers.SuppressionImportUploadSerializer,
            "text/csv": OpenApiRequest(OpenApiTypes.BINARY),
        },
        responses={200: serializers.SuppressionImportResultSerializer},
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
        owner_id = self.owner_id()
        result = suppressions_import_csv(
            owner_id=owner_id, text=csv_import_text(request, serializers.SuppressionImportUploadSerializer)
        )
        body = {
            "added": result.added,
            "already_present": result.already_present,
            "invalid": result.invalid,
            "errors": result.errors,
        }
        return Response(serializers.SuppressionImportResultSerializer(body).data)

    @extend_schema(
        summary="The list as CSV",
        description="`email,reason,source,detail,created_at`, a header row first; the list's filters apply.",
        parameters=[SCOPE],
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV text")},
    )
    @action(
        detail=False,
        methods=["get"],
        url_path="export",
        pagination_class=None,
        renderer_classes=[JSONRenderer, CSVRenderer],
    )
    def export_csv(self, request: Request) -> StreamingHttpResponse:
        refuse_empty(request.query_params, [api_settings.URL_FORMAT_OVERRIDE])  # DRF would take it as absent
        entries = self.filter_queryset(self.get_queryset()).order_by("email", "id")
        response = StreamingHttpResponse(suppressions_export_csv(entries), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="suppressions.csv"'
        return response
