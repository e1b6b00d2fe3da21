"""Console pages of usage (统计): requests, tokens, TTFT and latency per model over time, and the CSV export.

Platform admins also get the ingestion page: the lag of the usage stream and its dead letters, each re-queueable.
"""

from __future__ import annotations

import csv
from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from core import charts
from core.errors import ApplicationError
from core.forms import Echo, org_or_404
from deployments.views import staff_required
from metering import ingestion, selectors
from metering.forms import UsageFilterForm


def _usage_query(request, org, known: list[str]):
    form = UsageFilterForm(request.GET or None, model_ids=known)
    query = selectors.UsageQuery()
    if form.is_bound and form.is_valid():
        query = selectors.UsageQuery(days=form.cleaned_data["days"] or 7, model_id=form.cleaned_data["model"])
    return form, query


def group_label(group: str) -> str:
    """What a usage group is called on the page: a model id as it is, the groups that are no model in words."""
    return {
        selectors.NO_MODEL: _("(no model: refused before routing)"),
        selectors.UNKNOWN_MODEL: _("(unknown model ids)"),
        selectors.OTHER_MODELS: _("Other models"),
    }.get(group, group)


def _bucket_labels(query: selectors.UsageQuery) -> list:
    now = timezone.localtime()
    if query.bucket == "hour":
        first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=24 * query.days - 1)
        return [first + timedelta(hours=i) for i in range(24 * query.days)]
    first_day = now.date() - timedelta(days=query.days - 1)
    return [first_day + timedelta(days=i) for i in range(query.days)]


def _usage_charts(series: list[dict], query: selectors.UsageQuery, shown: list[str]) -> dict:
    buckets = _bucket_labels(query)
    hourly = query.bucket == "hour"

    def key(value):
        return timezone.localtime(value).replace(minute=0, second=0, microsecond=0) if hourly else value

    labels = [b.strftime("%H:00") if hourly else b.strftime("%m-%d") for b in buckets]
    # The last bucket is the one still running: named so, not mistaken for a whole hour or day.
    labels[-1] = _("now") if hourly else _("today")
    index = {b: i for i, b in enumerate(buckets)}
    groups = list(shown) + sorted({row["group"] for row in series} - set(shown))  # "other" last
    tables: dict[str, dict[str, list[float | None]]] = {
        name: {g: [None] * len(buckets) for g in groups}
        for name in ("requests", "tokens", "ttft_p50", "ttft_p99", "latency_p50", "latency_p99")
    }
    for row in series:
        i = index.get(key(row["bucket"]))
        if i is None:
            continue
        for name, table in tables.items():
            table[row["group"]][i] = float(row[name]) if row[name] is not None else None
    for name in ("requests", "tokens"):
        for line in tables[name].values():
            line[:] = [v or 0 for v in line]
    names = {g: group_label(g) for g in groups}
    other = {group_label(selectors.OTHER_MODELS)}

    def chart(title: str, *metrics: tuple[str, str]):
        lines = [charts.Series(names[g], tables[metric][g], variant) for g in groups for metric, variant in metrics]
        return charts.line_chart(labels, lines, title=title, current=len(labels) - 1, muted=other)

    percentiles = ("p50", "p99")
    return {
        "requests": chart(_("Requests"), ("requests", "")),
        "tokens": chart(_("Tokens"), ("tokens", "")),
        "ttft": chart(_("Time to first token (ms)"), *((f"ttft_{p}", p) for p in percentiles)),
        "latency": chart(_("Latency (ms)"), *((f"latency_{p}", p) for p in percentiles)),
    }


@login_required
def usage(request):
    org = org_or_404(request)
    known = selectors.usage_model_ids(org)
    form, query = _usage_query(request, org, known)
    models = selectors.usage_models(org, query, known=known)
    for row in models:
        row["label"], row["is_model"] = group_label(row["group"]), row["group"] in known
    groups = [row["group"] for row in models]
    # Each group its own colour while the palette lasts; past it, the least used fold into "other".
    shown = groups if len(groups) <= charts.MAX_SERIES else groups[: charts.MAX_SERIES - 1]
    series = selectors.usage_series(org, query, known=known, shown=shown)
    return render(
        request,
        "metering/usage.html",
        {
            "form": form,
            "query": query,
            "models": models,
            "charts": _usage_charts(series, query, shown),
            "export_query": request.GET.urlencode(),
        },
    )


@login_required
def usage_csv(request):
    org = org_or_404(request)
    _form, query = _usage_query(request, org, selectors.usage_model_ids(org))

    def rows():
        writer = csv.writer(Echo())
        yield writer.writerow(
            [
                "request_id",
                "started_at",
                "model",
                "endpoint",
                "source",
                "status",
                "prompt_tokens",
                "cached_tokens",
                "completion_tokens",
                "ttft_ms",
                "latency_ms",
                "charge",
            ]
        )
        for row in selectors.usage_export_rows(org, query).iterator(chunk_size=2000):
            row = list(row)
            row[1] = timezone.localtime(row[1]).isoformat()
            yield writer.writerow(["" if v is None else v for v in row])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="usage-{org.namespace}-{query.days}d.csv"'
    return response


@staff_required
def ingestion_status(request):
    return render(
        request,
        "metering/ingestion.html",
        {"lag": selectors.ingestion_lag(), "dead_letters": selectors.dead_letters()},
    )


@staff_required
@require_POST
def dead_letter_retry(request, letter_id: str):
    try:
        new_id = ingestion.usage_dead_letter_retry(entry_id=letter_id, actor=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("Queued again as %(id)s.") % {"id": new_id})
    return redirect("metering:ingestion")
