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
from tests.billing.conftest import make_service, meter, observed
from tests.factories import OrganizationFactory

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def instance_total(org):
    return -sum(e.amount for e in LedgerEntry.objects.filter(org=org, kind=EntryKind.INSTANCE_CHARGE))


@pytest.fixture
def service(org, public_model, region):
    return make_service(org, public_model, region, hourly="3.52")


def test_settlement_charges_instance_seconds_per_window_up_to_the_last_observation(org, service):
    meter(service, T0 + timedelta(minutes=10), 2)
    meter(service, T0 + timedelta(minutes=70), 1)
    observed(service, T0 + timedelta(hours=2, minutes=4))
    with time_machine.travel(T0 + timedelta(hours=2, minutes=5), tick=False):
        settle_instances_task()
        settle_instances_task()  # the beat runs again: nothing new
    entries = list(LedgerEntry.objects.filter(org=org, kind=EntryKind.INSTANCE_CHARGE).order_by("period_start"))
    # 08:10–09:00 at 2 = 6000 s; 09:00–09:10 at 2 + 09:10–10:00 at 1 = 1200 + 3000 s; 10:00–10:04 (seen) at 1 = 240 s
    assert [e.data["instance_seconds"] for e in entries] == ["6000", "4200", "240"]
    assert [e.amount for e in entries] == [Decimal("-5.866667"), Decimal("-4.106667"), Decimal("-0.234667")]


def test_settle_on_stop_then_periodic_equals_one_settlement_of_the_hour(org, other_org, public_model, region):
    a = make_service(org, public_model, region, name="a", hourly="3.52")
    b = make_service(other_org, public_model, region, name="b", hourly="3.52")
    for s in (a, b):
        meter(s, T0 + timedelta(seconds=13, microseconds=5), 3)
        meter(s, T0 + timedelta(minutes=25, seconds=7), 1)
    with time_machine.travel(T0 + timedelta(minutes=25, seconds=7, microseconds=77), tick=False):
        services.service_settle(service_id=a.pk)  # scale: settle what ran so far
        services.service_settle(service_id=a.pk)  # replayed: nothing
    observed(a, T0 + timedelta(minutes=41))
    with time_machine.travel(T0 + timedelta(minutes=41, seconds=1), tick=False):
        services.service_settle(service_id=a.pk)
    for s in (a, b):
        observed(s, T0 + timedelta(hours=1))
    with time_machine.travel(T0 + timedelta(hours=1, minutes=1), tick=False):
        settle_instances_task()
    assert LedgerEntry.objects.filter(org=org, kind=EntryKind.INSTANCE_CHARGE).count() == 3
    assert LedgerEntry.objects.filter(org=other_org, kind=EntryKind.INSTANCE_CHARGE).count() == 1
    assert instance_total(org) == instance_total(other_org) > 0


def balance(org) -> Decimal:
    return BillingAccount.objects.get(org=org).balance


def test_balance_and_month_spend_include_running_instances_within_one_settle_period(org, alice_client, service):
    """The billing page showed ¥0.23 for 25 minutes, then ¥3.98 at once: time is charged as it accrues."""
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("100"), key="topup")
    meter(service, T0 + timedelta(minutes=5), 1)
    for minutes in (10, 15, 20, 25):
        observed(service, T0 + timedelta(minutes=minutes))  # the reconcile heartbeat, every 30 s in production
        with time_machine.travel(T0 + timedelta(minutes=minutes, seconds=20), tick=False):
            settle_instances_task()  # the settlement beat, every 5 minutes
            ran = Decimal((minutes - 5) * 60)
            assert balance(org) == Decimal("100") - (ran * Decimal("3.52") / 3600).quantize(Decimal("0.000001"))
            page = alice_client.get("/billing/").content.decode()
    # 20 minutes of one instance at ¥3.52/h: the overview's balance and this month's spend say so before 09:00
    assert "¥98.83" in page and "¥1.17" in page


def test_repeated_settlements_across_the_hour_charge_exactly_one_hours_worth(org, other_org, public_model, region):
    """Settling every 5 minutes (each twice, and once per scale) charges what one settlement after the hour does."""
    often = make_service(org, public_model, region, name="often", hourly="3.52")
    once = make_service(other_org, public_model, region, name="once", hourly="3.52")
    for s in (often, once):
        meter(s, T0 - timedelta(minutes=17, seconds=3, microseconds=9), 3)
        meter(s, T0 + timedelta(minutes=7, seconds=11), 2)
    for step in range(1, 16):  # 07:45:03 … 08:55:03
        moment = T0 - timedelta(minutes=20) + timedelta(minutes=5 * step, seconds=3)
        observed(often, moment - timedelta(seconds=2))
        with time_machine.travel(moment, tick=False):
            services.service_settle(service_id=often.pk)
            services.service_settle(service_id=often.pk)
    end = T0 + timedelta(hours=1)
    for s in (often, once):
        observed(s, end)
    with time_machine.travel(end + timedelta(minutes=1), tick=False):
        settle_instances_task()
        settle_instances_task()
    assert LedgerEntry.objects.filter(org=org, kind=EntryKind.INSTANCE_CHARGE).count() > 10
    # 07:42:56.99–08:07:11 at 3, 08:07:11–09:00 at 2, rounded once per clock hour
    seconds_before = Decimal("1023.000009") * 3
    seconds_after = (Decimal(431) * 3) + Decimal(3169) * 2
    expected = (seconds_before * Decimal("3.52") / 3600).quantize(Decimal("0.000001")) + (
        seconds_after * Decimal("3.52") / 3600
    ).quantize(Decimal("0.000001"))
    assert instance_total(org) == instance_total(other_org) == expected


def test_time_after_the_last_observation_is_not_charged_until_observed(org, service):
    """The platform went down after its heartbeat: the meter still says 2, but nothing is known past the heartbeat."""
    meter(service, T0, 2)
    observed(service, T0 + timedelta(minutes=10))
    with time_machine.travel(T0 + timedelta(minutes=10, seconds=25), tick=False):
        settle_instances_task()  # the beat ran once more before the platform went down
    assert instance_total(service.org) == (Decimal(2 * 600) * Decimal("3.52") / 3600).quantize(Decimal("0.000001"))
    # Restarted 30 minutes later: the instances were found gone, their meter closed where they were last seen.
    meter(service, T0 + timedelta(minutes=10), 0)
    meter(service, T0 + timedelta(minutes=41), 2)
    observed(service, T0 + timedelta(minutes=45))
    with time_machine.travel(T0 + timedelta(minutes=45, seconds=10), tick=False):
        settle_instances_task()
    # 10 minutes before the stop and 4 after the restart; the 31 minutes down cost nothing
    charged = Decimal(2 * 600 + 2 * 240) * Decimal("3.52") / 3600
    assert instance_total(service.org) == charged.quantize(Decimal("0.000001"))


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
    observed(service, T0 + timedelta(minutes=30))
    with time_machine.travel(T0 + timedelta(minutes=30), tick=False):
        sub = services.subscription_create(service=service, instances=1, actor=alice)
    assert sub.monthly_price == Decimal("1774.08")
    assert LedgerEntry.objects.get(org=org, kind=EntryKind.SUBSCRIPTION_CHARGE).amount == Decimal("-1774.08")
    observed(service, T0 + timedelta(hours=1))
    with time_machine.travel(T0 + timedelta(hours=1, minutes=30), tick=False):
        settle_instances_task()
    # 08:00–08:30: 2 instances pay-as-you-go (3600 s); 08:30–09:00: 1 uncovered instance (1800 s)
    assert instance_total(org) == Decimal("5.280000")
    with time_machine.travel(T0 + timedelta(days=15, minutes=30), tick=False):
        addon = services.subscription_add_instances(subscription=sub, instances=1, actor=alice)
    assert LedgerEntry.objects.get(key=f"subscription:{addon.pk}").amount == Decimal("-887.04")  # half a month
    observed(service, T0 + timedelta(days=20))
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


@override_settings(BILLING_GRACE_HOURS=2)
def test_an_overdrawn_orgs_autoscaling_subscription_keeps_to_what_the_subscription_covers(
    org, alice, public_model, region
):
    """Instances above a subscription's floor are billed by the hour: an overdrawn org's autoscaler may not add them."""
    from deployments.models import ScalingMode, Service
    from deployments.services import service_autoscale
    from deployments.texts import TIMELINE
    from tenancy.models import AuditEvent

    monthly = make_service(org, public_model, region, name="monthly", mode="subscription", hourly="1.00")
    Service.objects.filter(pk=monthly.pk).update(scaling_mode=ScalingMode.AUTOSCALE, min_instances=1, max_instances=3)
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("600"), key="topup")
    with time_machine.travel(T0, tick=False):
        services.subscription_create(service=monthly, instances=1, actor=alice)  # 504.00 of the 600
        service_autoscale(service_id=monthly.pk, instances=3, message=TIMELINE("autoscale_wake", n=3))
        services.ledger_post(org=org, kind=EntryKind.TOKEN_CHARGE, amount=Decimal("-200"), key="charge")
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        assert stop_overdrawn_task() == 0  # within the grace period
    with time_machine.travel(T0 + timedelta(hours=2, minutes=1), tick=False):
        assert stop_overdrawn_task() == 1
        assert stop_overdrawn_task() == 0  # once
    monthly = Service.objects.get(pk=monthly.pk)
    assert (monthly.desired_running, monthly.max_instances, monthly.min_instances, monthly.instances) == (True, 1, 1, 1)
    capped = monthly.events.filter(reason="Overdrawn").first()
    assert capped.message == "the organization is overdrawn: autoscaling kept at the 1 instance its subscription covers"
    assert AuditEvent.objects.get(action="billing.cap_overdrawn").data == {"floor": 1}


def test_banner_warns_before_services_are_stopped(org, alice_client, charlie_client):
    services.ledger_post(org=org, kind=EntryKind.TOKEN_CHARGE, amount=Decimal("-3"), key="charge")
    page = alice_client.get("/billing/").content.decode()
    assert "Your balance is used up" in page and "will be stopped at" in page
    assert "Your balance is used up" not in charlie_client.get("/billing/").content.decode()
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("100"), key="topup")
    assert "Your balance is used up" not in alice_client.get("/billing/").content.decode()
