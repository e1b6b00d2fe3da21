"""Per-token charging: usage records of public models become ledger charges, in idempotent batches.

A batch costs a fixed number of queries whatever the number of orgs in it (claim, re-check, prices, one ledger
posting for all orgs with ``ledger_post_many``, one insert of the charges), so one charging loop keeps up with the
gateway's peak rate (``bench/usage_throughput.py``); the batch size is ``BILLING_CHARGE_BATCH_SIZE``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing import pricing
from billing.models import (
    ZERO,
    EntryKind,
    UsageCharge,
)
from billing.selectors import token_price_histories
from billing.services.ledger import Posting, ledger_post_many
from billing.services.prices import token_prices_seed
from billing.texts import LEDGER
from metering.models import UsageRecord, UsageStatus

logger = logging.getLogger(__name__)


class Claimed(NamedTuple):
    """What pricing and posting read of a claimed usage record."""

    id: UUID
    org_id: UUID
    catalog_model_id: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    started_at: datetime
    cost: Decimal | None
    currency: str


def _insert_charges(rows: list[tuple[UUID, UUID, int, int, Decimal]]) -> None:
    """Insert UsageCharge rows (record, org, price, entry, amount) with COPY, several times faster than INSERT.

    COPY has no ON CONFLICT: the caller holds the records' row locks and has left out the charged ones, so a
    duplicate can only mean a bug, and its UNIQUE violation rolls the whole batch back.
    """
    if not rows:
        return
    fields = ("usage_record", "org", "token_price", "entry", "amount", "created_at")
    columns = [UsageCharge._meta.get_field(name).column for name in fields]  # type: ignore[union-attr]
    now = timezone.now()
    with connection.cursor() as cursor:
        statement = f"COPY {UsageCharge._meta.db_table} ({', '.join(map(str, columns))}) FROM STDIN"
        with cursor.cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row((*row, now))


def usage_batch_key(record_ids: Iterable[object]) -> str:
    """The deterministic key of a batch: the same records always make the same key."""
    digest = hashlib.sha256(",".join(sorted(str(i) for i in record_ids)).encode()).hexdigest()
    return f"usage:{digest[:40]}"


def usage_charge_pending(*, limit: int | None = None) -> int:
    """Price and charge up to ``limit`` uncharged public usage records, exactly once; returns how many.

    Records are claimed with ``FOR UPDATE SKIP LOCKED`` so concurrent workers take disjoint batches; each record gets
    one UsageCharge (UNIQUE on the record) and each org one ledger entry keyed by the org's record ids in the batch
    (posted for all orgs at once by ``ledger_post_many``), all in one transaction — a worker killed mid-batch leaves
    nothing behind and the next run charges the same records.
    Error responses are never charged; aborted streams pay for the tokens that were streamed.

    A record's cost is what the gateway computed with the same rule and the price history it caches; a record served
    while its gateway still held the previous price (a price changed within the serving-epoch bound) is corrected
    to its charge here, so a usage record's cost always equals its ledger charge.
    """
    limit = limit or settings.BILLING_CHARGE_BATCH_SIZE
    with transaction.atomic():
        # Plain tuples, not model instances: building 2,000 instances per batch cost more than the queries.
        records = [
            Claimed(*row)
            for row in UsageRecord.objects.filter(public=True, charge__isnull=True, catalog_model__isnull=False)
            .exclude(status=UsageStatus.ERROR)
            .order_by("created_at", "id")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list(*Claimed._fields)[:limit]
        ]
        if not records:
            return 0
        # A record charged by a transaction that committed after our snapshot but before we locked it.
        done = set(
            UsageCharge.objects.filter(usage_record_id__in=[r.id for r in records]).values_list(
                "usage_record_id", flat=True
            )
        )
        records = [r for r in records if r.id not in done]
        model_ids = {r.catalog_model_id for r in records}
        token_prices_seed(catalog_model_ids=model_ids)  # a charge points at a price row
        histories = token_price_histories(model_ids)
        by_org: dict[UUID, list[tuple[Claimed, int, Decimal]]] = defaultdict(list)
        corrected: list[UsageRecord] = []
        for record in records:
            rates = histories[record.catalog_model_id].at(record.started_at)
            assert rates.token_price_id is not None  # seeded above
            amount = pricing.token_amount(
                rates,
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                cached_tokens=record.cached_tokens,
            )
            if record.cost != amount or record.currency != rates.currency:
                corrected.append(UsageRecord(id=record.id, cost=amount, currency=rates.currency))
            by_org[record.org_id].append((record, rates.token_price_id, amount))
        org_ids = sorted(by_org, key=str)
        postings = []
        for org_id in org_ids:
            items = by_org[org_id]
            postings.append(
                Posting(
                    org_id=org_id,
                    kind=EntryKind.TOKEN_CHARGE,
                    amount=-sum((amount for _r, _p, amount in items), ZERO),
                    key=usage_batch_key(r.id for r, _p, _a in items),
                    description=LEDGER("token_usage", n=len(items)),
                    period_start=min(r.started_at for r, _p, _a in items),
                    period_end=max(r.started_at for r, _p, _a in items),
                    data={
                        "requests": len(items),
                        "prompt_tokens": sum(r.prompt_tokens for r, _p, _a in items),
                        "completion_tokens": sum(r.completion_tokens for r, _p, _a in items),
                    },
                )
            )
        charges = []
        for org_id, (entry, created) in zip(org_ids, ledger_post_many(postings), strict=True):
            if not created:
                # The same batch was committed before, so its records carry charges already: nothing to do.
                continue
            charges += [(r.id, org_id, p, entry.pk, a) for r, p, a in by_org[org_id]]
        _insert_charges(charges)
        charged = len(charges)
        if corrected:
            logger.info(
                "%d usage records were priced with a price no longer in force: set to their charge", len(corrected)
            )
            UsageRecord.objects.bulk_update(corrected, ["cost", "currency"])
    return charged
