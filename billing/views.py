"""Console views of the billing center (费用中心) and usage (统计), and the Stripe webhook."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from datetime import date

from csp.decorators import csp_update
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from django_htmx.middleware import HtmxDetails

from billing import selectors, services
from billing import stripe as stripe_api
from billing.context import credit_help
from billing.forms import AccountCreditForm, AddInstancesForm, LedgerFilterForm, SubscriptionForm, TopUpForm
from billing.models import EntryKind, Subscription, TopUp
from core import charts
from core.errors import ApplicationError
from core.forms import Echo, actor_of, apply_error, org_or_404
from core.money import format_money
from core.querysets import get_for_org_or_404
from deployments.views import staff_required
from tenancy.models import Organization

logger = logging.getLogger(__name__)


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails  # set by django_htmx's middleware


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    org = org_or_404(request)
    state = selectors.balance_state(org)
    start, end = selectors.month_bounds(selectors.this_month())
    per_day = selectors.spend_per_day(org, days=30)
    today = timezone.localdate()
    chart = charts.bar_chart(
        [(_("today") if d == today else d.strftime("%m-%d"), v) for d, v in per_day],
        title=_("Spend per day, last 30 days (%(currency)s)") % {"currency": state.currency},
        current=next((i for i, (d, _v) in enumerate(per_day) if d == today), None),
        current_note=_("so far"),
    )
    hours = selectors.instance_hours_per_day(org, days=30)
    return render(
        request,
        "billing/overview.html",
        {
            "state": state,
            "hours": hours,
            "hours_chart": _instance_hours_chart(hours, today) if hours.services else None,
            "month_spend": selectors.spend_between(org, start, end),
            "month_start": start,
            "chart": chart,
            "by_model": selectors.spend_by_model(org, start, end),
            "by_service": selectors.spend_by_service(org, start, end),
            "recent": selectors.ledger_entries(org)[:10],
            "topups": selectors.org_topups(org)[:5],
        },
    )


def _instance_hours_chart(hours: selectors.InstanceHours, today: date) -> str:
    """Instance-hours per day stacked by service; past the palette the smallest services fold into one group."""
    shown = hours.services
    other_name = _("Other services")
    series = [charts.Series(s.name, [float(h) for h in s.hours]) for s in shown[: charts.MAX_SERIES - 1]]
    if len(shown) >= charts.MAX_SERIES:
        rest = shown[charts.MAX_SERIES - 1 :]
        series.append(charts.Series(other_name, [float(sum(s.hours[i] for s in rest)) for i in range(len(hours.days))]))
    return charts.stacked_bar_chart(
        [_("today") if d == today else d.strftime("%m-%d") for d in hours.days],
        series,
        title=_("Instance hours per day and service, last 30 days"),
        current=next((i for i, d in enumerate(hours.days) if d == today), None),
        current_note=_("so far"),
        muted={other_name},
    )


@login_required
def ledger(request: HtmxHttpRequest) -> HttpResponse:
    org = org_or_404(request)
    form = LedgerFilterForm(request.GET or None)
    flt = selectors.LedgerFilter()
    if form.is_bound and form.is_valid():
        flt = selectors.LedgerFilter(
            kind=form.cleaned_data["kind"], start=form.cleaned_data["start"], end=form.cleaned_data["end"]
        )
    # A service's instance charges (settled every few minutes) read as one line per hour; the rows stay exact.
    page = Paginator(selectors.ledger_lines(org, flt), 50).get_page(request.GET.get("page"))
    lines = selectors.ledger_lines_load(page.object_list)
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "lines": lines, "query": query.urlencode(), "currency": settings.CURRENCY}
    template = "billing/partials/ledger_table.html" if request.htmx else "billing/ledger.html"
    return render(request, template, context)


@login_required
def statements(request: HttpRequest) -> HttpResponse:
    org = org_or_404(request)
    return render(request, "billing/statements.html", {"months": selectors.statement_months(org)})


def _month(year: int, month: int) -> date:
    if not 1 <= month <= 12 or not 2000 <= year <= 2100:
        raise Http404("No such month")
    return date(year, month, 1)


@login_required
def statement(request: HttpRequest, year: int, month: int) -> HttpResponse:
    org = org_or_404(request)
    return render(
        request, "billing/statement.html", {"statement": selectors.statement(org, _month(year, month)), "org": org}
    )


@login_required
def statement_csv(request: HttpRequest, year: int, month: int) -> StreamingHttpResponse:
    org = org_or_404(request)
    st = selectors.statement(org, _month(year, month))
    labels = dict(EntryKind.choices)

    # Columns for people (an accountant, a spreadsheet): no internal ids; the reference is one a payment provider
    # knows.
    def rows() -> Iterator[str]:
        writer = csv.writer(Echo())
        yield writer.writerow(
            [
                _("Date"),
                _("Type"),
                _("Description"),
                _("Service"),
                _("Amount"),
                _("Balance"),
                _("Currency"),
                _("Reference"),
            ]
        )
        for e in st.entries:
            yield writer.writerow(
                [
                    timezone.localtime(e.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                    str(labels.get(e.kind, e.kind)),
                    e.description_text,
                    e.service.name if e.service else "",
                    e.amount,
                    e.balance_after,
                    e.currency,
                    e.reference,
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="statement-{org.namespace}-{st.month:%Y-%m}.csv"'
    return response


@login_required
def topup(request: HttpRequest) -> HttpResponse:
    org = org_or_404(request)
    currency = settings.CURRENCY
    form = TopUpForm(request.POST or None, currency=currency)
    if request.method == "POST" and form.is_valid():
        try:
            created = services.topup_create(org=org, amount=form.cleaned_data["amount"], actor=actor_of(request))
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            return redirect("billing:topup-detail", pk=created.pk)
    return render(
        request,
        "billing/topup.html",
        {
            "form": form,
            "configured": stripe_api.is_configured(),
            "topups": selectors.org_topups(org)[:20],
            **credit_help(),
        },
    )


@login_required
@csp_update(stripe_api.card_page_csp())  # type: ignore[arg-type]  # django-csp types a view as (request) only
def topup_detail(request: HtmxHttpRequest, pk: str) -> HttpResponse:
    org = org_or_404(request)
    item = get_for_org_or_404(TopUp, org, pk=pk)
    if request.htmx:  # the status poll: no card form, so no client secret
        return render(request, "billing/partials/topup_status.html", {"topup": item})
    return render(
        request,
        "billing/topup_detail.html",
        {
            "topup": item,
            "publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
            "client_secret": selectors.topup_client_secret(item) if settings.STRIPE_PUBLISHABLE_KEY else "",
            "stripe_js": (settings.STRIPE_JS_URL if settings.STRIPE_PUBLISHABLE_KEY else ""),
        },
    )


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Stripe's webhook: a verified event is applied once; a bad signature is a 400 and changes nothing."""
    try:
        event = stripe_api.webhook_event(request.body, request.headers.get("Stripe-Signature"))
    except stripe_api.BadSignature as exc:
        logger.warning("rejected a Stripe webhook: %s", exc)
        return HttpResponseBadRequest("invalid signature", content_type="text/plain")
    services.stripe_event_handle(event=event)
    return HttpResponse("ok", content_type="text/plain")


@login_required
def subscriptions(request: HttpRequest) -> HttpResponse:
    org = org_or_404(request)
    candidates = selectors.services_without_subscription(org)
    form = SubscriptionForm(request.POST or None, services=candidates)
    if request.method == "POST" and form.is_valid():
        service = next(s for s in candidates if str(s.pk) == form.cleaned_data["service"])
        try:
            created = services.subscription_create(
                service=service,
                instances=form.cleaned_data["instances"],
                auto_renew=form.cleaned_data["auto_renew"],
                actor=actor_of(request),
            )
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            messages.success(request, _("Subscription started for %(service)s.") % {"service": service.name})
            return redirect("billing:subscription-detail", pk=created.pk)
    rows = [(s, selectors.covered_instances(s)) for s in selectors.org_subscriptions(org)]
    return render(
        request,
        "billing/subscriptions.html",
        {
            "form": form,
            "rows": rows,
            "candidates": [(s, services.subscription_monthly_price(s)) for s in candidates],
        },
    )


@login_required
def subscription_detail(request: HttpRequest, pk: str) -> HttpResponse:
    org = org_or_404(request)
    sub = get_for_org_or_404(Subscription, org, pk=pk, parent=None)
    form = AddInstancesForm(request.POST or None)
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "auto_renew":
                services.subscription_set_auto_renew(
                    subscription=sub, auto_renew=request.POST.get("value") == "on", actor=actor_of(request)
                )
                messages.success(request, _("Renewal setting saved."))
                return redirect("billing:subscription-detail", pk=sub.pk)
            if action == "add" and form.is_valid():
                services.subscription_add_instances(
                    subscription=sub, instances=form.cleaned_data["instances"], actor=actor_of(request)
                )
                messages.success(request, _("Instances added."))
                return redirect("billing:subscription-detail", pk=sub.pk)
        except ApplicationError as exc:
            apply_error(form, exc)
    return render(
        request,
        "billing/subscription_detail.html",
        {
            "sub": sub,
            "form": form,
            "addons": sub.addons.order_by("period_start"),
            "covered": selectors.covered_instances(sub),
            "charges": selectors.ledger_entries(org).filter(service=sub.service, kind=EntryKind.SUBSCRIPTION_CHARGE)[
                :20
            ],
        },
    )


# --- platform staff: every organization's balance, and crediting one -----------------------------------------


@staff_required
def accounts(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:100]
    page = Paginator(selectors.org_accounts(query), 50).get_page(request.GET.get("page"))
    return render(request, "billing/accounts.html", {"page": page, "query": query, "currency": settings.CURRENCY})


@staff_required
def account_credit(request: HttpRequest, org_id: str) -> HttpResponse:
    org = Organization.objects.filter(pk=org_id).first()
    if org is None:
        raise Http404("No such organization")
    form = AccountCreditForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            entry = services.account_credit(
                org=org,
                amount=form.cleaned_data["amount"],
                reason=form.cleaned_data["reason"],
                actor=actor_of(request),
                token=form.cleaned_data["token"],
            )
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            messages.success(
                request,
                _("%(amount)s posted to %(org)s; its balance is now %(balance)s.")
                % {
                    "amount": format_money(entry.amount, entry.currency),
                    "org": org.namespace,
                    "balance": format_money(entry.balance_after, entry.currency),
                },
            )
            return redirect(f"{reverse('billing:accounts')}?q={org.namespace}")
    return render(
        request, "billing/account_credit.html", {"org": org, "state": selectors.balance_state(org), "form": form}
    )
