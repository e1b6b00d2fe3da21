"""Reads of usage: per-model statistics, time series and the export of usage records (not about money)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Aggregate, Avg, Count, F, FloatField, Q, Sum
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone

from metering.models import UsageRecord


class Percentile(Aggregate):
    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), **extra)


@dataclass(frozen=True)
class UsageQuery:
    days: int = 7
    model_id: str = ""

    @property
    def bucket(self) -> str:
        return "hour" if self.days <= 2 else "day"


def _usage_records(org, query: UsageQuery):
    qs = UsageRecord.objects.for_org(org).filter(started_at__gte=timezone.now() - timedelta(days=query.days))
    if query.model_id:
        qs = qs.filter(model_id=query.model_id)
    return qs


def usage_models(org, query: UsageQuery) -> list[dict]:
    """Per model over the window: requests, errors, tokens, TTFT and latency p50/p99."""
    return list(
        _usage_records(org, query)
        .values("model_id")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status="error")),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            ttft_p50=Percentile("ttft_ms", 0.5),
            ttft_p99=Percentile("ttft_ms", 0.99),
            latency_p50=Percentile("latency_ms", 0.5),
            latency_p99=Percentile("latency_ms", 0.99),
            latency_avg=Avg("latency_ms"),
        )
        .order_by("-requests", "model_id")
    )


def usage_series(org, query: UsageQuery) -> list[dict]:
    """Per time bucket (and model): requests, tokens and latency percentiles, oldest first."""
    trunc = TruncHour("started_at") if query.bucket == "hour" else TruncDate("started_at")
    return list(
        _usage_records(org, query)
        .annotate(bucket=trunc)
        .values("bucket", "model_id")
        .annotate(
            requests=Count("id"),
            tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
            ttft_p50=Percentile("ttft_ms", 0.5),
            ttft_p99=Percentile("ttft_ms", 0.99),
            latency_p50=Percentile("latency_ms", 0.5),
            latency_p99=Percentile("latency_ms", 0.99),
        )
        .order_by("bucket", "model_id")
    )


def usage_model_ids(org) -> list[str]:
    return list(UsageRecord.objects.for_org(org).values_list("model_id", flat=True).distinct().order_by("model_id"))


def usage_export_rows(org, query: UsageQuery):
    return (
        _usage_records(org, query)
        .select_related("charge")
        .order_by("started_at")
        .values_list(
            "id",
            "started_at",
            "model_id",
            "endpoint",
            "source",
            "status",
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
            "ttft_ms",
            "latency_ms",
            "charge__amount",
        )
    )
