"""Management API for billing (/api/billing/...): balance, ledger, top-ups. Tenant-scoped, read-only."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from billing import selectors
from billing.models import EntryKind, LedgerEntry, TopUp
from core.api import validated_query
from tenancy.api import OrgScopedViewSetMixin


class LedgerEntrySerializer(serializers.ModelSerializer):
    service = serializers.CharField(source="service.name", default=None, allow_null=True, read_only=True)

    class Meta:
        model = LedgerEntry
        fields = [
            "id",
            "created_at",
            "kind",
            "amount",
            "balance_after",
            "currency",
            "description",
            "service",
            "period_start",
            "period_end",
        ]


class TopUpSerializer(serializers.ModelSerializer):
    class Meta:
        model = TopUp
        fields = [
            "id",
            "created_at",
            "amount",
            "currency",
            "status",
            "refunded_amount",
            "failure_message",
            "payment_intent_id",
        ]


class LedgerQuerySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=EntryKind.values, required=False, allow_blank=True)


class BalanceSerializer(serializers.Serializer):
    balance = serializers.DecimalField(max_digits=20, decimal_places=6)
    credit_limit = serializers.DecimalField(max_digits=14, decimal_places=2)
    spendable = serializers.DecimalField(max_digits=20, decimal_places=6)
    currency = serializers.CharField()
    overdrawn_since = serializers.DateTimeField(allow_null=True)
    stop_at = serializers.DateTimeField(allow_null=True)


@extend_schema_view(
    list=extend_schema(
        summary="Ledger entries of the organization, newest first",
        parameters=[LedgerQuerySerializer],
    ),
    retrieve=extend_schema(summary="One ledger entry"),
)
class LedgerEntryViewSet(OrgScopedViewSetMixin, viewsets.ReadOnlyModelViewSet):
    scoped_model = LedgerEntry
    serializer_class = LedgerEntrySerializer

    def queryset_hook(self, queryset: QuerySet[LedgerEntry]) -> QuerySet[LedgerEntry]:
        kind = validated_query(self.request, LedgerQuerySerializer).get("kind")
        if kind:
            queryset = queryset.filter(kind=kind)
        return queryset.select_related("service").order_by("-created_at", "-id")

    @extend_schema(
        summary="Balance, credit limit and spendable amount of the organization", responses=BalanceSerializer
    )
    @action(detail=False, methods=["get"], serializer_class=BalanceSerializer)
    def balance(self, request: Request) -> Response:
        state = selectors.balance_state(getattr(request, "api_org", None) or getattr(request, "org", None))
        return Response(
            BalanceSerializer(
                {
                    "balance": state.balance,
                    "credit_limit": state.credit_limit,
                    "spendable": state.spendable,
                    "currency": state.currency,
                    "overdrawn_since": state.overdrawn_since,
                    "stop_at": state.stop_at,
                }
            ).data
        )


@extend_schema_view(
    list=extend_schema(summary="Top-ups of the organization"), retrieve=extend_schema(summary="One top-up")
)
class TopUpViewSet(OrgScopedViewSetMixin, viewsets.ReadOnlyModelViewSet):
    scoped_model = TopUp
    serializer_class = TopUpSerializer

    def queryset_hook(self, queryset: QuerySet[TopUp]) -> QuerySet[TopUp]:
        return queryset.order_by("-created_at")
