"""Billing across autoscale events: instance-seconds exact however the meter moves and however often it is settled,
and a subscription's floor prepaid with the instances above it billed per second.

The meter series are drawn by a seeded generator (hypothesis is not a direct test dependency), so a failing seed
replays as it failed. The expected charge is computed here independently of ``billing.pricing``: integer
microseconds per clock hour, times the instances running above the floor, priced and rounded once per hour.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
import time_machine
from django.utils import translation

from billing import services
from billing.models import EntryKind, LedgerEntry
from billing.tasks import settle_instances_task
from deployments.models import Service, ServiceStatus
from tests.billing.conftest import make_service, meter, observed

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
PRICE = Decimal("3.52")
US = timedelta(microseconds=1)


def charged(service) -> Decimal:
    return -sum((e.amount for e in instance_entries(service)), Decimal(0))


def instance_entries(service) -> list[LedgerEntry]:
    return list(
        LedgerEntry.objects.filter(service=service, kind=EntryKind.INSTANCE_CHARGE).order_by("period_start", "id")
    )


def _step(series, moment: datetime) -> int:
    value = 0
    for at, n in series:
        if at <= moment:
            value = n
    return value


def billed_micros(changes, start: datetime, end: datetime, floors=()) -> int:
    """Instance-microseconds above the floor in [start, end)."""
    cuts = sorted({start, end, *(at for at, _n in [*changes, *floors] if start < at < end)})
    return sum(
        max(0, _step(changes, left) - _step(floors, left)) * ((right - left) // US)
        for left, right in zip(cuts, cuts[1:], strict=False)
    )


def expected_charge(
    changes: list[tuple[datetime, int]], until: datetime, price: Decimal, floors: list[tuple[datetime, int]] = ()
) -> tuple[Decimal, int]:
    """(the charge, billable instance-microseconds) of a meter series up to ``until``, rounded once per clock hour.

    ``floors``: (from, instances) steps of the subscription floor; instances above it are billed, none below.
    """
    total, micros_total = Decimal(0), 0
    hour = changes[0][0].replace(minute=0, second=0, microsecond=0)
    while hour < until:
        micros = billed_micros(changes, hour, min(hour + timedelta(hours=1), until), floors)
        micros_total += micros
        total += (Decimal(micros) * price / 3600 / 1_000_000).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
        hour += timedelta(hours=1)
    return total, micros_total


def assert_rows_record_their_seconds(entries, changes, floors=()) -> None:
    """Each row's instance-seconds are those of its own period (a segment whose hour's rounded cost did not move,
    a microsecond at 2 instances, posts no row: its hour's total is still exact)."""
    for e in entries:
        assert Decimal(e.data["instance_seconds"]) * 1_000_000 == billed_micros(
            changes, e.period_start, e.period_end, floors
        )


@dataclass(frozen=True)
class Step:
    at: datetime
    instances: int | None = None  # a meter change
    settle: int = 0  # settle this many times (a scale's settlement and the beat, replayed)
    lag: timedelta = timedelta(0)  # the settlement runs this long after the heartbeat it reads


def autoscale_series(seed: int, *, hours: int = 5) -> tuple[list[Step], datetime]:
    """Meter changes an autoscaler could make (bursts, quiet stretches at zero, changes within a second of each
    other and on the hour) and settlements at random moments between them, some replayed."""
    rng = random.Random(seed)
    end = T0 + timedelta(hours=hours)
    moments: set[datetime] = set()
    while len(moments) < rng.randint(8, 24):
        moments.add(T0 + timedelta(microseconds=rng.randrange(0, hours * 3600 * 1_000_000)))
    moments.add(T0 + timedelta(hours=rng.randint(1, hours - 1)))  # a change exactly on a clock hour
    changes, last = [], 0
    for at in sorted(moments):
        n = rng.choice([0, 0, 1, 2, 3, 4]) if last else rng.choice([1, 2, 3])
        if n != last:  # meter_set writes one event per change, never a repeat
            changes.append((at, n))
            last = n
    settle_at = sorted(
        T0 + timedelta(microseconds=rng.randrange(1, hours * 3600 * 1_000_000)) for _ in range(rng.randint(5, 30))
    )
    steps = [Step(at, instances=n) for at, n in changes]
    steps += [Step(at, settle=rng.randint(1, 3)) for at in settle_at if at not in dict(changes)]
    steps.sort(key=lambda s: (s.at, s.instances is None))
    # A settlement's own clock runs ahead of the heartbeat it reads, never past the next change (a reconcile pass
    # dates a change no earlier than the time already settled).
    for i, s in enumerate(steps):
        if s.settle:
            gap = (steps[i + 1].at - s.at) if i + 1 < len(steps) else timedelta(seconds=30)
            steps[i] = Step(s.at, settle=s.settle, lag=min(timedelta(seconds=rng.uniform(0, 30)), gap / 2))
    return steps, end


def replay(service, steps: list[Step], end: datetime) -> None:
    """Apply the meter changes in time order, settle where the series says, then settle everything after ``end``."""
    for s in steps:
        if s.instances is not None:
            meter(service, s.at, s.instances)
            Service.objects.filter(pk=service.pk).update(
                status=ServiceStatus.RUNNING if s.instances else ServiceStatus.IDLE
            )
        observed(service, s.at)  # the heartbeat of the pass that saw it
        for i in range(s.settle):
            with time_machine.travel(s.at + s.lag, tick=False):
                if i % 2:
                    settle_instances_task()
                else:
                    services.service_settle(service_id=service.pk)
    observed(service, end)
    with time_machine.travel(end + timedelta(minutes=1), tick=False):
        settle_instances_task()
        settle_instances_task()


def test_the_issue_series_0_3_1_0_2_across_hours_costs_its_exact_integral(org, public_model, region):
    service = make_service(org, public_model, region, hourly=str(PRICE), instances=0, status=ServiceStatus.IDLE)
    changes = [
        (T0 + timedelta(minutes=50, seconds=0, microseconds=1), 3),  # woken: 3 within the hour
        (T0 + timedelta(hours=1, minutes=12, seconds=30), 1),  # stabilised down, the next hour
        (T0 + timedelta(hours=1, minutes=40), 0),  # idle: scaled to zero
        (T0 + timedelta(hours=3, minutes=59, seconds=59, microseconds=999_999), 2),  # woken a microsecond before 4
    ]
    steps = [Step(at, instances=n) for at, n in changes]
    steps += [
        Step(T0 + timedelta(minutes=55), settle=2),
        Step(T0 + timedelta(hours=1, minutes=5), settle=1),
        Step(T0 + timedelta(hours=2, minutes=30), settle=3),  # idle: nothing to charge, nothing posted
    ]
    steps.sort(key=lambda s: (s.at, s.instances is None))
    end = T0 + timedelta(hours=4, minutes=20)
    replay(service, steps, end)
    # 3 × 9:59.999999 + 3 × 12:30 + 1 × 27:30 + (idle 2 h 20 min) + 2 × 20:00.000001, hour by hour
    expected, micros = expected_charge(changes, end, PRICE)
    assert micros == 3 * 599_999_999 + 3 * 750_000_000 + 1_650_000_000 + 2 * 1_200_000_001
    assert charged(service) == expected
    assert_rows_record_their_seconds(instance_entries(service), changes)
    # the idle stretch (09:40–11:59:59.999999) has no row at all
    idle = (T0 + timedelta(hours=1, minutes=40), changes[-1][0])
    assert not [e for e in instance_entries(service) if e.period_start >= idle[0] and e.period_end <= idle[1]]


@pytest.mark.parametrize("seed", range(8))
def test_autoscale_series_settled_at_arbitrary_times_charge_the_exact_integral(org, public_model, region, seed):
    service = make_service(org, public_model, region, hourly=str(PRICE), instances=0, status=ServiceStatus.IDLE)
    steps, end = autoscale_series(seed)
    replay(service, steps, end)
    changes = [(s.at, s.instances) for s in steps if s.instances is not None]
    expected, micros = expected_charge(changes, end, PRICE)
    entries = instance_entries(service)
    assert charged(service) == expected, f"seed {seed}"
    assert micros > 0
    assert_rows_record_their_seconds(entries, changes)
    # rows tile the charged time: no gap, no overlap, none across a clock hour
    for e in entries:
        assert e.period_end <= e.period_start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    for a, b in zip(entries, entries[1:], strict=False):
        assert a.period_end <= b.period_start
    # replaying every settlement afterwards (a retried task, a late beat) posts nothing
    rows = LedgerEntry.objects.count()
    for s in steps:
        with time_machine.travel(s.at + s.lag, tick=False):
            services.service_settle(service_id=service.pk)
    with time_machine.travel(end + timedelta(minutes=2), tick=False):
        settle_instances_task()
    assert LedgerEntry.objects.count() == rows


@pytest.mark.parametrize("seed", range(4))
def test_a_subscription_floor_is_prepaid_and_instances_above_it_are_billed_per_second(
    org, alice, public_model, region, seed
):
    """Autoscaled between 0 and 4 under a subscription of 1 (then 2 with an add-on): only instances above the floor
    are charged hourly; time below the floor is not refunded."""
    service = make_service(
        org, public_model, region, hourly=str(PRICE), mode="subscription", instances=1, min_instances=1, max_instances=4
    )
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("10000"), key="topup")
    steps, end = autoscale_series(100 + seed)
    subscribed_at = T0 + timedelta(hours=1, minutes=17, seconds=3)
    added_at = T0 + timedelta(hours=3, minutes=2, microseconds=7)
    pending = [(subscribed_at, "subscribe"), (added_at, "add")]
    subscription = None
    for s in steps:
        while pending and pending[0][0] < s.at:
            at, action = pending.pop(0)
            observed(service, at)
            with time_machine.travel(at, tick=False):
                if action == "subscribe":
                    subscription = services.subscription_create(service=service, instances=1, actor=alice)
                else:
                    services.subscription_add_instances(subscription=subscription, instances=1, actor=alice)
        replay_one(service, s)
    observed(service, end)
    with time_machine.travel(end + timedelta(minutes=1), tick=False):
        settle_instances_task()
    changes = [(s.at, s.instances) for s in steps if s.instances is not None]
    expected, micros = expected_charge(changes, end, PRICE, floors=[(subscribed_at, 1), (added_at, 2)])
    assert charged(service) == expected, f"seed {seed}"
    entries = instance_entries(service)
    assert_rows_record_their_seconds(entries, changes, [(subscribed_at, 1), (added_at, 2)])
    # each row is charged against one floor and says which
    for e in entries:
        floor = 2 if e.period_start >= added_at else 1 if e.period_start >= subscribed_at else 0
        assert e.data["covered_instances"] == floor
        assert not (e.period_start < subscribed_at < e.period_end) and not (e.period_start < added_at < e.period_end)
        if floor:
            n = "instance" if floor == 1 else "instances"
            assert e.description_text == f"Instance time above the subscription's {floor} {n} of {service.model_id}"
        else:
            assert e.description_text == f"Instance time of {service.model_id}"


def replay_one(service, s: Step) -> None:
    if s.instances is not None:
        meter(service, s.at, s.instances)
    observed(service, s.at)
    for _ in range(s.settle):
        with time_machine.travel(s.at + s.lag, tick=False):
            services.service_settle(service_id=service.pk)


def test_the_above_the_floor_line_is_translated(org, alice, public_model, region):
    service = make_service(org, public_model, region, hourly=str(PRICE), mode="subscription", instances=3)
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("10000"), key="topup")
    meter(service, T0, 3)
    observed(service, T0)
    with time_machine.travel(T0, tick=False):
        services.subscription_create(service=service, instances=2, actor=alice)
    observed(service, T0 + timedelta(minutes=30))
    with time_machine.travel(T0 + timedelta(minutes=31), tick=False):
        settle_instances_task()
    (entry,) = instance_entries(service)
    assert entry.amount == Decimal("-1.760000")  # 1 instance above 2 for half an hour
    assert entry.description_text == f"Instance time above the subscription's 2 instances of {service.model_id}"
    with translation.override("zh-hans"):
        text = entry.description_text
    assert "Instance time" not in text and "2" in text and service.model_id in text


def test_below_the_floor_nothing_is_refunded(org, alice, public_model, region):
    service = make_service(org, public_model, region, hourly=str(PRICE), mode="subscription", instances=2)
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("10000"), key="topup")
    meter(service, T0, 2)
    observed(service, T0)
    with time_machine.travel(T0, tick=False):
        services.subscription_create(service=service, instances=2, actor=alice)
    meter(service, T0 + timedelta(minutes=10), 0)  # scaled to zero under a floor of 2
    observed(service, T0 + timedelta(hours=3))
    with time_machine.travel(T0 + timedelta(hours=3), tick=False):
        settle_instances_task()
    assert not LedgerEntry.objects.filter(org=org, kind=EntryKind.INSTANCE_CHARGE).exists()
    assert not LedgerEntry.objects.filter(org=org, amount__gt=0).exclude(kind=EntryKind.TOPUP).exists()
