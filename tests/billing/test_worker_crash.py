"""Proof: a real Celery worker charging usage and instance time is SIGKILLed mid-batch, the work is replayed, and
the ledger ends up equal to the priced usage and instance-seconds — to the last micro-unit, nothing charged twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from billing.models import BillingAccount, EntryKind, LedgerEntry, MeterCursor, UsageCharge
from maas.celery import app
from metering.models import UsageRecord
from tests.billing.conftest import make_service, meter
from tests.factories import OrganizationFactory
from tests.support.servers import subprocess_database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
SIX = Decimal("0.000001")
HOURLY = Decimal("3.60")


def _worker(queue: str, name: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "maas.settings_test",
            "DATABASE_URL": f"{subprocess_database_url()}?application_name={name}",
            "REDIS_URL": settings.REDIS_URL,
            "BILLING_CHARGE_BATCH_SIZE": "2500",
        }
    )
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "maas",
            "worker",
            "-Q",
            queue,
            "--concurrency",
            "2",
            "--pool",
            "prefork",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _worker_is_charging(name: str) -> bool:
    """The worker holds an open transaction that has written ledger or charge rows (not yet committed)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE a.application_name = %s AND l.mode = 'RowExclusiveLock' "
            "AND l.relation IN ('billing_ledgerentry'::regclass, 'billing_usagecharge'::regclass)",
            [name],
        )
        return cursor.fetchone()[0] > 0


def _expected_token_amount(r: UsageRecord) -> Decimal:
    raw = (Decimal(r.prompt_tokens) * Decimal("0.0006") + Decimal(r.completion_tokens) * Decimal("0.0012")) / 1000
    return raw.quantize(SIX, rounding=ROUND_HALF_UP)


def _expected_instance_amount(steps: list[tuple], end) -> Decimal:
    """Instance-seconds per hour window × price, rounded per window (the documented rule)."""
    per_window: dict = defaultdict(Decimal)
    for (at, n), (nxt, _n) in zip(steps, steps[1:] + [(end, 0)], strict=False):
        t = at
        while t < nxt:
            window = t.replace(minute=0, second=0, microsecond=0)
            stop = min(window + timedelta(hours=1), nxt)
            per_window[window] += Decimal(n) * Decimal((stop - t).total_seconds())
            t = stop
    return sum(((s * HOURLY / 3600).quantize(SIX, rounding=ROUND_HALF_UP) for s in per_window.values()), Decimal(0))


def _consistent(orgs) -> None:
    for org in orgs:
        entries = LedgerEntry.objects.filter(org=org)
        account = BillingAccount.objects.filter(org=org).first()
        assert (account.balance if account else 0) == sum((e.amount for e in entries), Decimal(0))
        token_entries = entries.filter(kind=EntryKind.TOKEN_CHARGE)
        charges = UsageCharge.objects.filter(org=org)
        assert -sum((e.amount for e in token_entries), Decimal(0)) == sum((c.amount for c in charges), Decimal(0))


def _bulk_usage(orgs, model, n, seed) -> None:
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        [
            UsageRecord(
                id=uuid.uuid4(),
                org=orgs[i % len(orgs)],
                endpoint="chat.completions",
                model_id=f"public/{model.slug}",
                catalog_model=model,
                public=True,
                prompt_tokens=(i * 37 + seed) % 3000 + 1,
                completion_tokens=(i * 13 + seed) % 900,
                cached_tokens=0,
                latency_ms=100,
                ttft_ms=10,
                status=("aborted" if i % 17 == 0 else "error" if i % 23 == 0 else "ok"),
                started_at=now - timedelta(seconds=i % 600),
                finished_at=now,
            )
            for i in range(n)
        ],
        batch_size=2000,
    )


def test_killed_worker_mid_batch_then_replay_charges_exactly_once(public_model, region, monkeypatch):
    queue = f"billing-proof-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(app.conf, "task_default_queue", queue)  # meter events enqueue settlement to our worker
    orgs = [OrganizationFactory(), OrganizationFactory()]
    _bulk_usage(orgs, public_model, 12000, seed=1)

    start = (timezone.now() - timedelta(hours=5)).replace(microsecond=0)
    lifecycles = {}
    for i, org in enumerate(orgs):
        service = make_service(org, public_model, region, name=f"svc-{i}", hourly=str(HOURLY))
        lifecycles[service] = [(start + timedelta(minutes=7 * i), 1)]
        meter(service, *lifecycles[service][0])

    first = _worker(queue, "billing-proof-1")
    try:
        for _ in range(3):
            app.send_task("billing.tasks.charge_usage_task", queue=queue)
        deadline = time.monotonic() + 60
        while not _worker_is_charging("billing-proof-1"):
            assert time.monotonic() < deadline, "the worker never started charging"
            time.sleep(0.005)
        os.killpg(first.pid, signal.SIGKILL)  # mid-batch: its transaction is open, nothing of it is committed
        first.wait(10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    time.sleep(0.5)  # PostgreSQL notices the dead connections and rolls their transactions back
    _consistent(orgs)
    charged_at_crash = UsageCharge.objects.count()
    uncharged = UsageRecord.objects.filter(public=True, charge__isnull=True).exclude(status="error").count()
    assert uncharged > 0, "the kill came after all charging was done"

    # Meanwhile: more traffic and service lifecycles (scale up, scale down, stop), written while a new worker runs.
    second = _worker(queue, "billing-proof-2")
    try:

        def traffic():
            try:
                _bulk_usage(orgs, public_model, 3000, seed=7)
            finally:
                connection.close()

        thread = threading.Thread(target=traffic)
        thread.start()
        for service, steps in lifecycles.items():
            for minutes, n in ((47, 3), (95, 2), (150, 0)):
                steps.append((start + timedelta(minutes=minutes), n))
                meter(service, *steps[-1])  # each commit enqueues a settlement (on_commit)
        thread.join()
        for _ in range(2):  # the replay: every task sent again, the beat's hourly run too
            app.send_task("billing.tasks.charge_usage_task", queue=queue)
            app.send_task("billing.tasks.settle_instances_task", queue=queue)
            for service in lifecycles:
                app.send_task("billing.tasks.settle_service_task", args=[str(service.pk)], queue=queue)

        def done() -> bool:
            pending = UsageRecord.objects.filter(public=True, charge__isnull=True).exclude(status="error").exists()
            cursors = MeterCursor.objects.filter(service__in=list(lifecycles))
            return (
                not pending
                and cursors.count() == 2
                and all(c.charged_until >= start + timedelta(minutes=150) for c in cursors)
            )

        deadline = time.monotonic() + 90
        while not done():
            assert time.monotonic() < deadline, "the replay did not finish"
            time.sleep(0.2)
        time.sleep(1.5)  # let replayed tasks still in flight run: they must change nothing
    finally:
        os.killpg(second.pid, signal.SIGKILL)
        second.wait(10)

    _consistent(orgs)
    assert UsageCharge.objects.count() > charged_at_crash
    records = list(UsageRecord.objects.filter(public=True).exclude(status="error"))
    assert (
        UsageCharge.objects.count()
        == len(records)
        == 15000
        - sum(1 for i in range(12000) if i % 23 == 0 and i % 17)
        - sum(1 for i in range(3000) if i % 23 == 0 and i % 17)
    )
    assert not UsageCharge.objects.filter(usage_record__status="error").exists()
    for org in orgs:
        expected_tokens = sum((_expected_token_amount(r) for r in records if r.org_id == org.pk), Decimal(0))
        charged_tokens = -sum(
            (e.amount for e in LedgerEntry.objects.filter(org=org, kind=EntryKind.TOKEN_CHARGE)), Decimal(0)
        )
        assert charged_tokens == expected_tokens
    for service, steps in lifecycles.items():
        charged = -sum(
            (e.amount for e in LedgerEntry.objects.filter(service=service, kind=EntryKind.INSTANCE_CHARGE)), Decimal(0)
        )
        assert charged == _expected_instance_amount(steps, steps[-1][0]) > 0
