"""The billing center and usage pages: tenant-scoped, query counts pinned, CSV exports, outsiders get 404."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing import services
from billing.models import EntryKind, LedgerEntry
from tests.billing.conftest import make_service, make_usage, meter, observed


@pytest.fixture
def activity(org, other_org, public_model, region):
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("100"), key="topup")
    for i in range(30):
        make_usage(org, public_model, prompt=100 * (i + 1), completion=50, latency_ms=100 + 10 * i, ttft_ms=20 + i)
    make_usage(other_org, public_model, prompt=99999, completion=1)
    services.usage_charge_pending()
    service = make_service(org, public_model, region, name="mine")
    meter(service, timezone.now() - timedelta(hours=3), 2)
    observed(service, timezone.now())
    services.service_settle(service_id=service.pk)
    return service


def test_nav_shows_billing_and_usage(alice_client):
    page = alice_client.get("/billing/").content.decode()
    assert 'href="/billing/"' in page and 'href="/billing/usage/"' in page


def test_overview_shows_balance_spend_chart_and_breakdowns(alice_client, activity, django_assert_max_num_queries):
    with django_assert_max_num_queries(19):  # 3 of them the instance hours, however many services ran
        response = alice_client.get(reverse("billing:overview"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "<svg" in page and "public/qwen2.5-7b-instruct" in page and "mine" in page
    assert 'id="balance"' in page and "¥" in page


def test_ledger_filters_and_paginates_with_pinned_queries(alice_client, activity, org, django_assert_max_num_queries):
    for i in range(60):
        services.ledger_post(org=org, kind=EntryKind.ADJUSTMENT, amount=Decimal("1"), key=f"adj-{i}")
    with django_assert_max_num_queries(12):
        page = alice_client.get("/billing/ledger/?kind=token_charge").content.decode()
    assert "Token usage" in page and "Adjustment" not in page.split("<tbody>")[1]
    page2 = alice_client.get("/billing/ledger/?page=2", HTTP_HX_REQUEST="true").content.decode()
    assert page2.startswith('<div id="ledger-table">') and "Page 2 of" in page2
    bad = alice_client.get("/billing/ledger/?start=2026-02-02&end=2026-01-01")
    assert bad.status_code == 200 and "must not be after" in bad.content.decode()


def test_ledger_is_tenant_scoped(charlie_client, activity):
    page = charlie_client.get("/billing/ledger/").content.decode()
    assert "Top-up" not in page.split("<tbody>")[-1] if "<tbody>" in page else True
    assert "Instance time of acme/mine" not in page


def test_statement_page_and_csv(alice_client, activity, org):
    month = timezone.localdate()
    page = alice_client.get(f"/billing/statements/{month.year}/{month.month}/").content.decode()
    assert "Closing balance" in page and "data-print" in page
    services.ledger_post(
        org=org,
        kind=EntryKind.TOPUP,
        amount=Decimal("20"),
        key="stripe:pi:pi_3Abc",
        description="Top-up by card",
        data={"payment_intent": "pi_3Abc", "event": "evt_1"},
    )
    csv_text = b"".join(alice_client.get(f"/billing/statements/{month.year}/{month.month}/csv/").streaming_content)
    lines = csv_text.decode().strip().splitlines()
    assert lines[0] == "Date,Type,Description,Service,Amount,Balance,Currency,Reference"
    assert len(lines) == 1 + LedgerEntry.objects.filter(org=org).count()
    # People's columns only: the platform's idempotency keys (usage batches, meter windows, Stripe objects) stay in.
    body = "\n".join(lines[1:])
    for key in LedgerEntry.objects.filter(org=org).values_list("key", flat=True):
        assert key not in body
    assert any(line.startswith(f"{month:%Y-%m-%d} ") and line.endswith(",CNY,pi_3Abc") for line in lines)
    assert sum(1 for line in lines if ",Instance hours," in line) >= 3  # one per hour window touched
    assert alice_client.get(f"/billing/statements/{month.year}/13/").status_code == 404
    assert str(month.strftime("%Y-%m")) in alice_client.get("/billing/statements/").content.decode()


def test_usage_page_shows_percentiles_and_charts(alice_client, activity, django_assert_max_num_queries):
    with django_assert_max_num_queries(12):
        response = alice_client.get("/billing/usage/?days=1")
    page = response.content.decode()
    assert page.count('class="chart"') == 4 and "public/qwen2.5-7b-instruct" in page
    # latency 100..390 ms: p50 = 245, p99 ≈ 387
    assert "245 / 387" in page
    rows = b"".join(alice_client.get("/billing/usage/csv/?days=7").streaming_content).decode().strip().splitlines()
    assert len(rows) == 31 and rows[0].startswith("request_id,started_at,model")
    assert alice_client.get("/billing/usage/?days=banana").status_code == 200


def test_outsider_gets_404_on_object_urls(alice, charlie_client, org, public_model, region):
    from billing.models import Subscription, TopUp

    service = make_service(org, public_model, region, mode="subscription")
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("5000"), key="t")
    sub = services.subscription_create(service=service, instances=1, actor=alice)
    topup = TopUp.objects.create(org=org, amount=Decimal("10"), currency="CNY", payment_intent_id="pi_x")
    assert charlie_client.get(f"/billing/subscriptions/{sub.pk}/").status_code == 404
    assert (
        charlie_client.post(f"/billing/subscriptions/{sub.pk}/", {"action": "add", "instances": 1}).status_code == 404
    )
    assert charlie_client.get(f"/billing/topup/{topup.pk}/").status_code == 404
    assert Subscription.objects.count() == 1


def test_subscription_pages_start_and_extend(alice, alice_client, org, public_model, region):
    service = make_service(org, public_model, region, name="monthly", mode="subscription", hourly="3.52")
    page = alice_client.get("/billing/subscriptions/").content.decode()
    assert "monthly" in page and "¥1,774.08" in page
    refused = alice_client.post(
        "/billing/subscriptions/", {"service": str(service.pk), "instances": 1, "auto_renew": "on"}
    )
    assert "top up first" in refused.content.decode()
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("5000"), key="t")
    response = alice_client.post(
        "/billing/subscriptions/", {"service": str(service.pk), "instances": 1, "auto_renew": "on"}
    )
    assert response.status_code == 302
    detail = alice_client.get(response["Location"]).content.decode()
    assert "Add instances" in detail
    alice_client.post(response["Location"], {"action": "auto_renew"})
    assert "Turn off renewal" not in alice_client.get(response["Location"]).content.decode()


def test_api_ledger_and_balance_are_scoped(alice_client, charlie_client, activity, org):
    body = alice_client.get("/api/billing/ledger/").json()
    assert body["count"] == LedgerEntry.objects.filter(org=org).count() >= 3
    theirs = charlie_client.get("/api/billing/ledger/").json()["results"]
    assert len(theirs) == 1 and theirs[0]["id"] not in {e["id"] for e in body["results"]}
    balance = alice_client.get("/api/billing/ledger/balance/").json()
    assert Decimal(balance["balance"]) < Decimal("100") and balance["currency"] == "CNY"
    entry_id = body["results"][0]["id"]
    assert charlie_client.get(f"/api/billing/ledger/{entry_id}/").status_code == 404
