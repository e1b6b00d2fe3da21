"""Reads of usage: per-model statistics, time series, the export of usage records (not about money), ingestion lag."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Aggregate, Avg, Case, CharField, Count, F, FloatField, Q, Sum, Value, When
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone

from core.redis import client as sredis
from metering import ingestion
from metering.models import UsageRecord, UsageStatus


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


# The groups usage is shown by: a model id the org really used, or one of these keys (none has a "/", and every id
# that resolves to a model has one, so they never meet a real id).
NO_MODEL = "none"  # refused before the request named a model (an unreadable body, a missing "model")
UNKNOWN_MODEL = "unknown"  # named a model that does not exist: mistyped ids, one group
OTHER_MODELS = "other"  # the charts' groups past the palette, folded together
TRIED_SHOWN = 5  # the mistyped ids the unknown group names


def _usage_records(org, query: UsageQuery):
    qs = UsageRecord.objects.for_org(org).filter(started_at__gte=timezone.now() - timedelta(days=query.days))
    if query.model_id:
        qs = qs.filter(model_id=query.model_id)
    return qs


def usage_model_ids(org) -> list[str]:
    """The model ids the org has really used: the request reached a model, or was served. Ids that never resolved
    (mistyped) are left out: they are shown as one group, never offered as a filter."""
    resolved = Q(catalog_model__isnull=False) | Q(service__isnull=False) | Q(status=UsageStatus.OK)
    return list(
        UsageRecord.objects.for_org(org)
        .filter(resolved)
        .exclude(model_id="")
        .values_list("model_id", flat=True)
        .distinct()
        .order_by("model_id")
    )


def _group(known: Sequence[str], shown: Collection[str] | None = None) -> Case:
    """A record's group: its model id when known, else ``NO_MODEL`` or ``UNKNOWN_MODEL``; with ``shown``, a group
    not in it becomes ``OTHER_MODELS``."""

    def kept(group: str) -> Value:
        return Value(group if shown is None or group in shown else OTHER_MODELS)

    cases = [When(model_id="", then=kept(NO_MODEL))]
    visible = [m for m in known if shown is None or m in shown]
    if visible:
        cases.append(When(model_id__in=visible, then=F("model_id")))
    hidden = [m for m in known if shown is not None and m not in shown]
    if hidden:
        cases.append(When(model_id__in=hidden, then=Value(OTHER_MODELS)))
    return Case(*cases, default=kept(UNKNOWN_MODEL), output_field=CharField())


def usage_models(org, query: UsageQuery, *, known: Sequence[str]) -> list[dict]:
    """Per group over the window (a known model id, or ``NO_MODEL``/``UNKNOWN_MODEL``): requests, errors, tokens,
    TTFT and latency p50/p99; the unknown group also lists the ids that were tried (``tried``, the most used first)."""
    rows = list(
        _usage_records(org, query)
        .annotate(group=_group(known))
        .values("group")
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
        .order_by("-requests", "group")
    )
    for row in rows:
        row["tried"] = []
        if row["group"] == UNKNOWN_MODEL:
            row["tried"] = list(
                _usage_records(org, query)
                .exclude(model_id="")
                .exclude(model_id__in=known)
                .values("model_id")
                .annotate(n=Count("id"))
                .order_by("-n", "model_id")
                .values_list("model_id", flat=True)[:TRIED_SHOWN]
            )
    return rows


def usage_series(org, query: UsageQuery, *, known: Sequence[str], shown: Collection[str]) -> list[dict]:
    """Per time bucket (and group, past ``shown`` folded into ``OTHER_MODELS``): requests, tokens and latency
    percentiles, oldest first."""
    trunc = TruncHour("started_at") if query.bucket == "hour" else TruncDate("started_at")
    return list(
        _usage_records(org, query)
        .annotate(bucket=trunc, group=_group(known, shown))
        .values("bucket", "group")
        .annotate(
            requests=Count("id"),
            tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
            ttft_p50=Percentile("ttft_ms", 0.5),
            ttft_p99=Percentile("ttft_ms", 0.99),
            latency_p50=Percentile("latency_ms", 0.5),
            latency_p99=Percentile("latency_ms", 0.99),
        )
        .order_by("bucket", "group")
    )


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


# --- ingestion (platform admins) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestionLag:
    queued: int  # stream entries not yet stored (stored ones are deleted from the stream)
    pending: int  # of those, read by a consumer and not yet acknowledged
    oldest_age_s: float | None  # age of the oldest entry not yet stored; None when the stream is empty
    dead_letters: int


def _entry_time(entry_id) -> datetime:
    return datetime.fromtimestamp(int(ingestion.as_text(entry_id).split("-")[0]) / 1000, tz=UTC)


def ingestion_lag() -> IngestionLag:
    """How far ingestion is behind: the stream's length, its oldest entry's age, and the dead letters."""
    client = sredis()
    ingestion.ensure_group(client)
    first = client.xrange(ingestion.stream_key(), count=1)
    oldest = (timezone.now() - _entry_time(first[0][0])).total_seconds() if first else None
    return IngestionLag(
        queued=client.xlen(ingestion.stream_key()),
        pending=int(client.xpending(ingestion.stream_key(), ingestion.GROUP)["pending"]),
        oldest_age_s=max(oldest, 0.0) if oldest is not None else None,
        dead_letters=client.xlen(ingestion.dead_letter_key()),
    )


@dataclass(frozen=True)
class DeadLetter:
    id: str  # in the dead-letter stream
    entry: str  # the original usage stream entry
    error: str
    dead_at: datetime
    queued_at: datetime | None
    raw: str


def dead_letters(limit: int = 100) -> list[DeadLetter]:
    """The newest dead-lettered usage entries first."""
    letters = []
    for letter_id, fields in sredis().xrevrange(ingestion.dead_letter_key(), count=limit) or []:
        fields = fields or {}
        entry = ingestion.as_text(fields.get(b"entry"))
        letters.append(
            DeadLetter(
                id=ingestion.as_text(letter_id),
                entry=entry,
                error=ingestion.as_text(fields.get(b"error")),
                dead_at=_entry_time(letter_id),
                queued_at=_entry_time(entry) if "-" in entry else None,
                raw=ingestion.as_text(fields.get(b"r")),
            )
        )
    return letters
