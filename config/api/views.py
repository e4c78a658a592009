"""Staff-only configuration API: read every setting, change one, reset it, read the history.

Every write goes through ConfigManagerService (validated, recorded, and seen by
every running process within 2 s).
"""

from __future__ import annotations

from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api.filters import IsoDateTimeFilter
from config.api.serializers import ConfigChangeSerializer, SettingSerializer, SettingUpdateSerializer
from config.models import ConfigChange, ConfigItem
from config.registry import CATEGORIES, REGISTRY, Setting
from config.services import ConfigManagerService, describe_setting

SOURCE = ConfigChange.Source.API


def _setting(category: str, key: str) -> Setting:
    setting = REGISTRY.get((category, key))
    if setting is None:
        raise NotFound(f"unknown setting {category}.{key}")
    return setting


def _describe(setting: Setting) -> dict:
    item = ConfigItem.objects.select_related("updated_by").filter(category=setting.category, key=setting.key).first()
    return describe_setting(setting, item)


class SettingListView(APIView):
    permission_classes = (IsAdminUser,)

    @extend_schema(
        parameters=[OpenApiParameter("category", str, enum=list(CATEGORIES), description="Only this category.")],
        responses=SettingSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        category = request.query_params.get("category")
        if category is not None and category not in CATEGORIES:
            return Response(
                {"detail": f"unknown category {category!r}; known: {', '.join(CATEGORIES)}"},
                status=status.HTTP_400_BAD_REQUEST,
            )
        rows = [row for row in ConfigManagerService.describe() if category in (None, row["category"])]
        return Response(SettingSerializer(rows, many=True).data)


class SettingDetailView(APIView):
    permission_classes = (IsAdminUser,)

    @extend_schema(responses=SettingSerializer)
    def get(self, request: Request, category: str, key: str) -> Response:
        return Response(SettingSerializer(_describe(_setting(category, key))).data)

    @extend_schema(
        summary="Set the value (PUT: `value` is required)",
        request=SettingUpdateSerializer,
        responses=SettingSerializer,
    )
    def put(self, request: Request, category: str, key: str) -> Response:
        return self._update(request, category, key, partial=False)

    @extend_schema(
        summary="Set the value (PATCH: without `value`, nothing changes)",
        request=SettingUpdateSerializer,
        responses=SettingSerializer,
    )
    def patch(self, request: Request, category: str, key: str) -> Response:
        return self._update(request, category, key, partial=True)

    def _update(self, request: Request, category: str, key: str, *, partial: bool) -> Response:
        setting = _setting(category, key)
        body = SettingUpdateSerializer(data=request.data, partial=partial)
        body.is_valid(raise_exception=True)
        if "value" in body.validated_data:
            # ConfigValidationError becomes a 400 with the message (common.api.errors).
            value = body.validated_data["value"]
            ConfigManagerService.set_config(category, key, value, user=request.user, source=SOURCE)
        return Response(SettingSerializer(_describe(setting)).data)

    @extend_schema(responses={200: SettingSerializer})
    def delete(self, request: Request, category: str, key: str) -> Response:
        """Reset the setting to its declared default; answers with the setting as it is now."""
        setting = _setting(category, key)
        ConfigManagerService.reset_config(category, key, user=request.user, source=SOURCE)
        return Response(SettingSerializer(_describe(setting)).data)


class ConfigChangeFilter(filters.FilterSet):
    changed_after = IsoDateTimeFilter(field_name="changed_at", lookup_expr="gte")
    changed_before = IsoDateTimeFilter(field_name="changed_at", lookup_expr="lt")

    class Meta:
        model = ConfigChange
        fields = ("category", "key", "source")


class ConfigChangeListView(generics.ListAPIView):
    """Who changed which setting, when, from what to what; newest first."""

    permission_classes = (IsAdminUser,)
    serializer_class = ConfigChangeSerializer
    queryset = ConfigChange.objects.select_related("changed_by")
    filterset_class = ConfigChangeFilter
    ordering_fields = ("changed_at",)
