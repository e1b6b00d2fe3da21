"""Per-token charging: exactly once, with the price in force when the request was made."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from billing import services
from billing.models import BillingAccount, EntryKind, LedgerEntry, TokenPrice, UsageCharge
from billing.pricing import PRICE_EPOCH
from billing.selectors import token_price_histories, token_price_history, usage_cost
from catalog.models import CatalogModel
from tests.billing.conftest import make_usage


def test_usage_is_charged_once_in_one_batch_per_org(org, other_org, public_model):
    a = [make_usage(org, public_model) for _ in range(3)]
    make_usage(other_org, public_model, prompt=2000, completion=0)
    assert services.usage_charge_pending() == 4
    assert services.usage_charge_pending() == 0
    entry = LedgerEntry.objects.get(org=org, kind=EntryKind.TOKEN_CHARGE)
    assert entry.amount == Decimal("-0.003600") and entry.data["requests"] == 3
    assert entry.key == services.usage_batch_key(r.pk for r in a)
    assert BillingAccount.objects.get(org=other_org).balance == Decimal("-0.001200")
    assert UsageCharge.objects.count() == 4


def test_errors_pay_nothing_aborted_streams_pay_what_was_streamed(org, public_model):
    make_usage(org, public_model, status="error", prompt=1000, completion=0)
    aborted = make_usage(org, public_model, status="aborted", prompt=1000, completion=250)
    make_usage(org, public_model, public=False)  # a dedicated service: paid per instance-hour instead
    assert services.usage_charge_pending() == 1
    assert UsageCharge.objects.get().usage_record_id == aborted.pk
    assert UsageCharge.objects.get().amount == Decimal("0.000900")


def test_usage_is_priced_with_the_price_in_force_at_request_time(org, public_model, admin_user):
    before = timezone.now() - timedelta(minutes=5)
    old = make_usage(org, public_model, started_at=before)
    services.usage_charge_pending()  # seeds the first price from the catalog
    with time_machine.travel(timezone.now() + timedelta(seconds=1)):
        public_model.input_price_per_1k = Decimal("0.0010")  # an admin edit (list_editable) creates history
        public_model.save()
    assert TokenPrice.objects.filter(catalog_model=public_model).count() == 2
    late = make_usage(org, public_model, started_at=before + timedelta(minutes=1))  # arrives late, old price
    new = make_usage(org, public_model, started_at=timezone.now() + timedelta(seconds=2))
    services.usage_charge_pending()
    charges = {c.usage_record_id: c.amount for c in UsageCharge.objects.all()}
    assert charges[old.pk] == charges[late.pk] == Decimal("0.001200")
    assert charges[new.pk] == Decimal("0.001600")
    assert usage_cost(
        catalog_model_id=public_model.pk,
        prompt_tokens=1000,
        completion_tokens=500,
        at=timezone.now() + timedelta(seconds=2),
    ) == Decimal("0.001600")


def test_cached_and_long_context_prices_from_the_price_history(org, public_model, admin_user):
    services.token_price_sync(catalog_model=public_model)
    services.token_price_create(
        catalog_model=public_model,
        input_per_1k=Decimal("0.0006"),
        output_per_1k=Decimal("0.0012"),
        cached_input_per_1k=Decimal("0.0002"),
        long_context_threshold=8000,
        long_input_per_1k=Decimal("0.0012"),
        long_output_per_1k=Decimal("0.0024"),
        actor=admin_user,
    )
    cached = make_usage(
        org, public_model, prompt=1000, completion=0, cached=500, started_at=timezone.now() + timedelta(seconds=1)
    )
    long = make_usage(
        org, public_model, prompt=10000, completion=1000, started_at=timezone.now() + timedelta(seconds=1)
    )
    services.usage_charge_pending()
    assert UsageCharge.objects.get(usage_record=cached).amount == Decimal("0.000400")
    assert UsageCharge.objects.get(usage_record=long).amount == Decimal("0.014400")


def test_catalog_sync_seeds_prices_without_duplicates(public_model):
    services.token_price_sync(catalog_model=public_model)
    services.token_price_sync(catalog_model=CatalogModel.objects.get(pk=public_model.pk))
    assert TokenPrice.objects.filter(catalog_model=public_model).count() == 1


def test_reading_prices_never_creates_price_rows(org, public_model, django_assert_max_num_queries):
    assert not TokenPrice.objects.filter(catalog_model=public_model).exists()
    rows = TokenPrice.objects.count()
    with django_assert_max_num_queries(2):
        histories = token_price_histories({public_model.pk})
    assert usage_cost(catalog_model_id=public_model.pk, prompt_tokens=1000, completion_tokens=500) == Decimal("0.0012")
    assert token_price_history(public_model.pk, since=timezone.now()) == histories[public_model.pk]
    assert TokenPrice.objects.count() == rows
    # the row the charge writes first is the price the reads assumed
    record = make_usage(org, public_model, started_at=timezone.now() - timedelta(days=1))
    services.usage_charge_pending()
    charge = UsageCharge.objects.get(usage_record=record)
    assert charge.amount == Decimal("0.001200") and charge.token_price.valid_from == PRICE_EPOCH
    assert token_price_history(public_model.pk).rates[0].token_price_id == charge.token_price_id


def test_a_record_priced_with_a_superseded_price_is_set_to_its_charge(org, public_model, admin_user):
    services.token_price_sync(catalog_model=public_model)
    services.token_price_create(
        catalog_model=public_model, input_per_1k=Decimal("0.0010"), output_per_1k=Decimal("0.0012"), actor=admin_user
    )
    # served by a gateway that had not yet picked up the new price
    stale = make_usage(org, public_model, started_at=timezone.now() + timedelta(seconds=1), cost=Decimal("0.001200"))
    exact = make_usage(org, public_model, started_at=timezone.now() + timedelta(seconds=1), cost=Decimal("0.001600"))
    services.usage_charge_pending()
    for record in (stale, exact):
        record.refresh_from_db()
        assert record.cost == UsageCharge.objects.get(usage_record=record).amount == Decimal("0.001600")
        assert record.currency == public_model.currency


def test_a_batch_of_many_orgs_is_charged_once_each_in_a_fixed_number_of_queries(
    public_model, django_assert_max_num_queries
):
    from django.db import transaction

    from tests.factories import OrganizationFactory

    orgs = [OrganizationFactory() for _ in range(30)]
    records = {org.pk: [make_usage(org, public_model, prompt=1000 * (i + 1)) for i in range(3)] for org in orgs}
    services.usage_charge_pending(limit=1)  # seeds the price and one account, outside the counted batch
    with pytest.raises(RuntimeError), transaction.atomic():  # a worker that dies after the batch: nothing stays
        services.usage_charge_pending()
        raise RuntimeError("worker killed")
    assert UsageCharge.objects.count() == 1

    with django_assert_max_num_queries(20):  # was about 10 per org (300 here); 16 with the cost correction
        assert services.usage_charge_pending() == 89
    assert services.usage_charge_pending() == 0

    for org in orgs:
        entries = LedgerEntry.objects.filter(org=org, kind=EntryKind.TOKEN_CHARGE)
        charges = UsageCharge.objects.filter(org=org)
        assert charges.count() == 3
        assert sum(e.amount for e in entries) == -sum(c.amount for c in charges)
        assert BillingAccount.objects.get(org=org).balance == sum(e.amount for e in entries)
        assert -sum(e.amount for e in entries) == Decimal("0.005400")  # (1 + 2 + 3) × 0.0006 + 3 × 500 × 0.0012/1k
    assert {c.usage_record_id for c in UsageCharge.objects.all()} == {r.pk for rs in records.values() for r in rs}


def test_posting_many_entries_again_changes_nothing(org, other_org):
    from billing.services.ledger import Posting, ledger_post_many

    postings = [
        Posting(org_id=org.pk, kind=EntryKind.TOKEN_CHARGE, amount=Decimal("-1.5"), key="usage:replay-a"),
        Posting(org_id=other_org.pk, kind=EntryKind.TOKEN_CHARGE, amount=Decimal("-2"), key="usage:replay-b"),
    ]
    first = ledger_post_many(postings)
    again = ledger_post_many(postings)  # a replay: the unique keys refuse the insert, ledger_post finds them
    assert [created for _e, created in first] == [True, True]
    assert [(e.pk, created) for e, created in again] == [(e.pk, False) for e, _c in first]
    assert BillingAccount.objects.get(org=org).balance == Decimal("-1.5")
    assert BillingAccount.objects.get(org=other_org).balance == Decimal("-2")


def test_the_charge_task_drains_more_than_a_fixed_number_of_batches(org, public_model, settings):
    from billing.tasks import charge_usage_task

    settings.BILLING_CHARGE_BATCH_SIZE = 1
    for _ in range(25):
        make_usage(org, public_model)
    assert charge_usage_task() == 25  # bounded by time, not by 20 batches (which capped charging at 1,000/s)
