"""The billing center's instance-hours per day and service (in the user's time zone), and the elastic price quote."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from billing import pricing, selectors, services
from billing.models import EntryKind, LedgerEntry
from deployments.models import ServiceStatus
from tenancy.models import UserProfile
from tests.billing.conftest import make_service, meter, observed

# 10:00 in New York (UTC-5 in January); in UTC and in Shanghai (the platform's zone) it is already the afternoon.
NOW = datetime(2026, 1, 15, 15, 0, tzinfo=UTC)


@pytest.fixture
def ran(org, public_model, region):
    """2 instances for 3 h yesterday evening and 1 for 30 min after midnight today, both in New York; in UTC and
    in Shanghai both runs fall on the same day."""
    service = make_service(org, public_model, region, name="chat", instances=0, status=ServiceStatus.IDLE)
    meter(service, datetime(2026, 1, 15, 1, 0, tzinfo=UTC), 2)  # 01-14 20:00 New York
    meter(service, datetime(2026, 1, 15, 4, 0, tzinfo=UTC), 0)  # 23:00
    meter(service, datetime(2026, 1, 15, 5, 0, tzinfo=UTC), 1)  # 01-15 00:00
    meter(service, datetime(2026, 1, 15, 5, 30, tzinfo=UTC), 0)  # 00:30: idle since
    return service


def table_rows(page: str) -> dict[str, list[str]]:
    table = page.split('id="instance-hours-table"', 1)[1].split("</table>", 1)[0]
    body = table.split("<tbody>", 1)[1]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        rows[cells[0]] = cells[1:]
    return rows


def test_instance_hours_per_day_are_counted_in_the_users_time_zone(alice, alice_client, ran):
    alice_client.post("/account/", {"time_zone": "America/New_York"})  # kept in the session, as a user sets it
    assert UserProfile.objects.get(user=alice).time_zone == "America/New_York"
    with time_machine.travel(NOW, tick=False):
        page = alice_client.get("/billing/").content.decode()
    rows = table_rows(page)
    assert rows["2026-01-14"] == ["6.00", "6.00"]  # the service's column, then the day's total
    assert rows["2026-01-15"] == ["0.50", "0.50"]
    assert rows["2026-01-13"] == ["0.00", "0.00"]
    assert len(rows) == 30
    assert "Instance hours per day" in page and "chat" in page
    # the chart draws one segment per day that ran, each with its exact value in its tooltip
    svg = page.split('id="instance-hours"', 1)[1].split("</svg></div>", 1)[0]
    assert re.search(r"<title>01-14 · chat: 6</title>", svg)
    assert re.search(r"<title>today \([^)]*\) · chat: 0.5</title>", svg)


def test_the_same_runs_fall_on_one_day_in_shanghai(org, ran):
    with time_machine.travel(NOW, tick=False), timezone.override("Asia/Shanghai"):
        hours = selectors.instance_hours_per_day(org, days=30)
    (service,) = hours.services
    assert hours.days[-1].isoformat() == "2026-01-15"
    assert service.hours[-1] == Decimal("6.50") and service.total == Decimal("6.50")


def test_a_service_running_now_counts_today_so_far_and_an_old_run_is_out_of_the_window(org, public_model, region):
    live = make_service(org, public_model, region, name="live")
    meter(live, NOW - timedelta(days=40), 3)  # running since long before the window, 3 all along
    old = make_service(org, public_model, region, name="old")
    meter(old, NOW - timedelta(days=45), 1)
    meter(old, NOW - timedelta(days=44), 0)
    with time_machine.travel(NOW, tick=False), timezone.override("UTC"):
        hours = selectors.instance_hours_per_day(org, days=30)
    (service,) = hours.services
    assert service.name == "live"
    assert service.hours[-1] == Decimal("45.00")  # 00:00–15:00 UTC today at 3
    assert service.hours[:-1] == [Decimal("72.00")] * 29


def test_outsiders_services_are_not_counted(org, other_org, charlie_client, ran):
    with time_machine.travel(NOW, tick=False):
        page = charlie_client.get("/billing/").content.decode()
        assert selectors.instance_hours_per_day(other_org).services == []
    assert 'id="instance-hours-table"' not in page and "No dedicated service ran in the last 30 days." in page


def test_many_services_fold_into_other_services(org, alice_client, public_model, region, django_assert_max_num_queries):
    for i in range(12):
        s = make_service(org, public_model, region, name=f"svc-{i:02d}")
        meter(s, NOW - timedelta(hours=2), i + 1)
    with time_machine.travel(NOW, tick=False), django_assert_max_num_queries(19):
        page = alice_client.get("/billing/").content.decode()
    svg = page.split('id="instance-hours"', 1)[1].split('<details class="chart-table">', 1)[0]
    assert "Other services" in svg and "svc-11" in svg and "svc-00" not in svg  # the largest shown by name
    assert len(table_rows(page)["2026-01-15"]) == 13  # the table keeps every service


def test_two_meter_changes_at_one_moment_the_later_wins(org, public_model, region):
    """A reconcile pass dates instances found gone no earlier than the latest change: the two share a moment."""
    service = make_service(org, public_model, region, name="tie", hourly="3.60")
    at = NOW - timedelta(hours=2)
    meter(service, at, 2)
    meter(service, at, 0)
    observed(service, NOW)
    with time_machine.travel(NOW, tick=False):
        services.service_settle(service_id=service.pk)
    assert not LedgerEntry.objects.filter(service=service, kind=EntryKind.INSTANCE_CHARGE).exists()


def test_hourly_range_bills_only_instances_above_the_floor():
    r = pricing.hourly_range(Decimal("3.52"), min_instances=0, max_instances=4)
    assert (r.low, r.high) == (Decimal("0"), Decimal("14.08"))
    r = pricing.hourly_range(Decimal("3.52"), min_instances=1, max_instances=4, covered=2)
    assert (r.low, r.high, r.covered) == (Decimal("0"), Decimal("7.04"), 2)


def test_the_quote_of_an_autoscaled_subscription_shows_the_floor_and_the_hourly_range(org, alice, public_model, region):
    from deployments.models import Service
    from deployments.placement import instance_prices

    service = make_service(org, public_model, region, name="auto", hourly="3.52", mode="subscription", instances=1)
    Service.objects.filter(pk=service.pk).update(created_at=NOW - timedelta(days=8))
    service.refresh_from_db()
    hourly, _monthly, _currency = instance_prices(region, service.gpu_product, service.gpu_count)
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("10000"), key="topup")
    with time_machine.travel(NOW - timedelta(days=8), tick=False):
        services.subscription_create(service=service, instances=1, actor=alice)
    meter(service, NOW - timedelta(days=7), 1)
    meter(service, NOW - timedelta(days=1), 3)  # a day at 3: 2 above the floor for 24 h
    meter(service, NOW - timedelta(hours=12), 1)
    with time_machine.travel(NOW, tick=False):
        quote = selectors.charge_quote(
            org=org,
            region=region,
            gpu_product=service.gpu_product,
            gpu_count=service.gpu_count,
            instances=1,
            billing_mode="subscription",
            service=service,
            min_instances=1,
            max_instances=4,
        )
    assert quote.covered == 1 and quote.due_now == 0
    assert (quote.hourly_range.low, quote.hourly_range.high) == (Decimal(0), hourly * 3)
    assert quote.recent is not None
    assert quote.recent.instance_hours == Decimal(7 * 24 + 2 * 12)
    assert quote.recent.billable_hours == Decimal(2 * 12)
    assert quote.recent_estimate == (hourly * 24 + quote.monthly * 7 / 30).quantize(Decimal("0.01"))


def test_the_quote_without_bounds_is_unchanged(org, public_model, region):
    service = make_service(org, public_model, region, name="fixed", hourly="3.52", instances=2)
    quote = selectors.charge_quote(
        org=org,
        region=region,
        gpu_product=service.gpu_product,
        gpu_count=service.gpu_count,
        instances=3,
        billing_mode="payg",
        service=service,
    )
    assert not quote.elastic and quote.recent is None and quote.recent_estimate is None  # younger than an hour
    assert quote.hourly_range.low == quote.hourly_range.high == quote.total_hourly


def test_the_estimate_extrapolates_the_last_seven_days_or_the_services_life_to_a_month(org, public_model, region):
    from deployments.models import Service

    service = make_service(org, public_model, region, name="est", hourly="3.52", instances=2)
    start = NOW - timedelta(days=10)
    Service.objects.filter(pk=service.pk).update(created_at=start)
    service.refresh_from_db()
    meter(service, start, 2)
    meter(service, start + timedelta(days=1), 0)

    def quote_at(moment):
        with time_machine.travel(moment, tick=False):
            return selectors.charge_quote(
                org=org,
                region=region,
                gpu_product=service.gpu_product,
                gpu_count=service.gpu_count,
                instances=2,
                billing_mode="payg",
                service=service,
            )

    idle = quote_at(start + timedelta(days=10))  # the last seven days: idle
    assert idle.recent.days == 7 and idle.recent_monthly == Decimal("0.00")
    young = quote_at(start + timedelta(days=2))  # 48 instance-hours in its 2 days of life: 720 per month
    assert (young.recent.days, young.recent.instance_hours) == (2, 48)
    assert young.recent_monthly == young.hourly * 48 * 15
    assert quote_at(start + timedelta(minutes=30)).recent is None  # under an hour: no history to go by
