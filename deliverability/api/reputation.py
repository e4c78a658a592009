"""``GET /api/deliverability/reputation/``: bounce and complaint rates over the recent window.

Everyone gets their own figures; staff also get every service's, and the
owners past a limit. Read-only: the figures come from deliverability.reputation.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api.filters import NonEmptyQueryMixin
from deliverability.reputation import (
    Rates,
    owner_rates,
    owners_over_limit,
    reputation_config,
    services_table,
    window_start,
)


class ReputationQuerySerializer(NonEmptyQueryMixin, serializers.Serializer):
    window_hours = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=168,
        help_text="Hours counted back from now (default: reputation.window_hours).",
    )


class RatesSerializer(serializers.Serializer):
    answered = serializers.IntegerField(help_text="Sends delivered or refused for good.")
    sent = serializers.IntegerField(help_text="Sends delivered.")
    hard_bounces = serializers.IntegerField()
    hard_bounce_rate = serializers.FloatField(allow_null=True, help_text="hard_bounces / answered; null when none.")
    complaints = serializers.IntegerField(help_text="Complaint suppressions (from ESP webhooks) in the window.")
    complaint_rate = serializers.FloatField(allow_null=True, help_text="complaints / sent; null when none sent.")
    policy_rejections = serializers.IntegerField(help_text="Refusals of the sender or content (5.7.x).")
    over_limits = serializers.ListField(
        child=serializers.ChoiceField(choices=["hard_bounce", "complaint"]),
        help_text="The limits passed, given at least reputation.min_sample answered (or sent) mails.",
    )


class ServiceRatesSerializer(RatesSerializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class OwnerRatesSerializer(RatesSerializer):
    id = serializers.UUIDField()
    username = serializers.CharField()


class LimitsSerializer(serializers.Serializer):
    hard_bounce_rate = serializers.FloatField()
    complaint_rate = serializers.FloatField()
    min_sample = serializers.IntegerField()


class ReputationSerializer(serializers.Serializer):
    window_hours = serializers.IntegerField()
    since = serializers.DateTimeField(help_text="The start of the window's first hour.")
    limits = LimitsSerializer()
    owner = RatesSerializer(help_text="Your own mail.")
    services = ServiceRatesSerializer(many=True, required=False, help_text="Staff only: every service active.")
    owners_over_limit = OwnerRatesSerializer(many=True, required=False, help_text="Staff only.")


class ReputationView(APIView):
    """Bounce and complaint rates: your own; staff also per service and the owners past a limit."""

    @extend_schema(
        summary="Bounce and complaint rates over the recent window",
        parameters=[ReputationQuerySerializer],
        responses={200: ReputationSerializer, 400: OpenApiResponse(description="Invalid parameters")},
    )
    def get(self, request: Request) -> Response:
        query = ReputationQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        config = reputation_config()
        hours = query.validated_data.get("window_hours") or config["window_hours"]
        since = window_start(timezone.now(), hours)
        own = owner_rates(since=since, config=config, owner_id=request.user.pk).get(request.user.pk, Rates())
        body: dict[str, Any] = {
            "window_hours": hours,
            "since": since,
            "limits": {
                "hard_bounce_rate": config["hard_bounce_rate_limit"],
                "complaint_rate": config["complaint_rate_limit"],
                "min_sample": config["min_sample"],
            },
            "owner": own.judge(config).as_dict(),
        }
        if request.user.is_staff:
            body["services"] = services_table(since=since, config=config)
            body["owners_over_limit"] = owners_over_limit(since=since, config=config)
        return Response(body)
