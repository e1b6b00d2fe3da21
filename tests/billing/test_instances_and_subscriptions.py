"""Per-instance-hour charging from meter events, subscriptions, and stopping overdrawn orgs after the grace period."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.test import override_settings

from billing import services
from billing.models import BillingAccount, EntryKind, LedgerEntry, Subscription, SubscriptionStatus
from billing.tasks import settle_instances_task, stop_overdrawn_task
from core.errors import ApplicationError
from deployments.models import PUBLIC_NAMESPACE, ServiceStatus
from tests.billing.conftest import make_service, meter
from tests.factories import OrganizationFactory

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def instance_total(org):
    return -sum(e.amount for e in LedgerEntry.objects.filter(org=org, kind=EntryKind.INSTANCE_CHARGE))


@pytest.fixture
def service(org, public_model, region):
    return make_service(org, public_model, region, hourly="3.52")


def test_hourly_settlement_charges_instance_seconds_per_window(org, service):
    meter(service, T0 + timedelta(minutes=10), 2)
    meter(service, T0 + timedelta(minutes=70), 1)
    with time_machine.travel(T0 + timedelta(hours=2, minutes=5), tick=False):
        settle_instances_task()
        settle_instances_task()  # the beat runs again: nothing new
    entries = list(LedgerEntry.objects.filter(org=org, kind=EntryKind.INSTANCE_CHARGE).order_by("period_start"))
    # 08:10–09:00 at 2 = 6000 s; 09:00–09:10 at 2 + 09:10–10:00 at 1 = 1200 + 3000 s
    assert [e.data["instance_seconds"] for e in entries] == ["6000", "4200"]
    assert [e.amount for e in entries] == [Decimal("-5.866667"), Decimal("-4.106667")]


def test_settle_on_stop_then_hourly_equals_one_hourly_settlement(org, other_org, public_model, region):
    a = make_service(org, public_model, region, name="a", hourly="3.52")
    b = make_service(other_org, public_model, region, name="b", hourly="3.52")
    for s in (a, b):
        meter(s, T0 + timedelta(seconds=13, microseconds=5), 3)
        meter(s, T0 + timedelta(minutes=25, seconds=7), 1)
    with time_machine.travel(T0 + timedelta(minutes=25, seconds=7, microseconds=77), tick=False):
        services.service_settle(service_id=a.pk)  # scale: settle what ran so far
        services.service_settle(service_id=a.pk)  # replayed: nothing
    with time_machine.travel(T0 + timedelta(minutes=41, seconds=1), tick=False):
        services.service_settle(service_id=a.pk)
    with time_machine.travel(T0 + timedelta(hours=1, minutes=1), tick=False):
        settle_instances_task()
    assert LedgerEntry.objects.filter(org=org, kind=EntryKind.INSTANCE_CHARGE).count() == 3
    assert instance_total(org) == instance_total(other_org) > 0


def test_platform_services_and_idle_services_are_not_charged(public_model, region, service):
    platform = OrganizationFactory(namespace=PUBLIC_NAMESPACE)
    shared = make_service(platform, public_model, region, name="shared")
    meter(shared, T0, 4)
    meter(service, T0, 1)
    meter(service, T0 + timedelta(minutes=30), 0)
    with time_machine.travel(T0 + timedelta(hours=5), tick=False):
        settle_instances_task()
    assert not LedgerEntry.objects.filter(org=platform).exists()
    assert instance_total(service.org) == Decimal("1.760000")
    with time_machine.travel(T0 + timedelta(hours=9), tick=False):
        assert services.services_to_settle(T0 + timedelta(hours=9)) == []


def test_subscription_is_paid_up_front_and_covers_its_instances(org, alice, public_model, region):
    service = make_service(org, public_model, region, hourly="3.52", mode="subscription", instances=2)
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("5000"), key="topup")
    meter(service, T0, 2)
    with time_machine.travel(T0 + timedelta(minutes=30), tick=False):
        sub = services.subscription_create(service=service, instances=1, actor=alice)
    assert sub.monthly_price == Decimal("1774.08")
    assert LedgerEntry.objects.get(org=org, kind=EntryKind.SUBSCRIPTION_CHARGE).amount == Decimal("-1774.08")
    with time_machine.travel(T0 + timedelta(hours=1, minutes=30), tick=False):
        settle_instances_task()
    # 08:00–08:30: 2 instances pay-as-you-go (3600 s); 08:30–09:00: 1 uncovered instance (1800 s)
    assert instance_total(org) == Decimal("5.280000")
    with time_machine.travel(T0 + timedelta(days=15, minutes=30), tick=False):
        addon = services.subscription_add_instances(subscription=sub, instances=1, actor=alice)
    assert LedgerEntry.objects.get(key=f"subscription:{addon.pk}").amount == Decimal("-887.04")  # half a month
    with time_machine.travel(T0 + timedelta(days=20), tick=False):
        settle_instances_task()
    charged = instance_total(org)
    # 2 instances × ½ h, then 1 uncovered instance for 15 days; from the add-on on both are covered
    assert charged == Decimal("3.52") * 1 + Decimal("3.52") * 15 * 24
    with time_machine.travel(T0 + timedelta(days=20), tick=False), pytest.raises(ApplicationError):
        services.subscription_create(service=service, instances=1, actor=alice)


def test_subscription_renews_with_funds_and_expires_without(org, alice, public_model, region):
    service = make_service(org, public_model, region, hourly="1.00", mode="subscription")
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("1100"), key="topup")
    with time_machine.travel(T0, tick=False):
        sub = services.subscription_create(service=service, instances=1, actor=alice)  # 504.00
    with time_machine.travel(T0 + timedelta(days=30, minutes=1), tick=False):
        assert services.subscription_renew_due() == (1, 0)
        assert services.subscription_renew_due() == (0, 0)
    sub.refresh_from_db()
    assert sub.status == SubscriptionStatus.EXPIRED
    renewal = Subscription.objects.get(service=service, status=SubscriptionStatus.ACTIVE)
    assert renewal.period_start == sub.period_end
    with time_machine.travel(T0 + timedelta(days=60, minutes=1), tick=False):
        assert services.subscription_renew_due() == (0, 1)  # 92 left, 504 needed
    assert BillingAccount.objects.get(org=org).balance == Decimal("92")


def test_subscription_needs_funds(org, alice, public_model, region):
    service = make_service(org, public_model, region, mode="subscription")
    with pytest.raises(ApplicationError) as exc:
        services.subscription_create(service=service, instances=1, actor=alice)
    assert exc.value.code == "insufficient_quota"
    assert not Subscription.objects.exists()


@override_settings(BILLING_GRACE_HOURS=2)
def test_overdrawn_payg_services_stop_after_the_grace_period(org, public_model, region):
    payg = make_service(org, public_model, region, name="payg")
    monthly = make_service(org, public_model, region, name="monthly", mode="subscription")
    with time_machine.travel(T0, tick=False):
        services.ledger_post(org=org, kind=EntryKind.TOKEN_CHARGE, amount=Decimal("-1"), key="charge")
    with time_machine.travel(T0 + timedelta(hours=1, minutes=59), tick=False):
        assert stop_overdrawn_task() == 0
    with time_machine.travel(T0 + timedelta(hours=2, minutes=1), tick=False):
        assert stop_overdrawn_task() == 1
    payg.refresh_from_db()
    monthly.refresh_from_db()
    assert payg.status == ServiceStatus.STOPPING and not payg.desired_running
    assert monthly.status == ServiceStatus.RUNNING


def test_banner_warns_before_services_are_stopped(org, alice_client, charlie_client):
    services.ledger_post(org=org, kind=EntryKind.TOKEN_CHARGE, amount=Decimal("-3"), key="charge")
    page = alice_client.get("/billing/").content.decode()
    assert "Your balance is used up" in page and "will be stopped at" in page
    assert "Your balance is used up" not in charlie_client.get("/billing/").content.decode()
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("100"), key="topup")
    assert "Your balance is used up" not in alice_client.get("/billing/").content.decode()
