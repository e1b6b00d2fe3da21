"""Per-token charging: usage records of public models become ledger charges, in idempotent batches."""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext as _

from billing import pricing
from billing.models import (
    ZERO,
    EntryKind,
    UsageCharge,
)
from billing.selectors import token_price_histories
from billing.services.ledger import ledger_post
from billing.services.prices import token_prices_seed
from metering.models import UsageRecord, UsageStatus

logger = logging.getLogger(__name__)


def usage_batch_key(record_ids: Iterable[object]) -> str:
    """The deterministic key of a batch: the same records always make the same key."""
    digest = hashlib.sha256(",".join(sorted(str(i) for i in record_ids)).encode()).hexdigest()
    return f"usage:{digest[:40]}"


def usage_charge_pending(*, limit: int | None = None) -> int:
    """Price and charge up to ``limit`` uncharged public usage records, exactly once; returns how many.

    Records are claimed with ``FOR UPDATE SKIP LOCKED`` so concurrent workers take disjoint batches; each record gets
    one UsageCharge (UNIQUE on the record) and each org one ledger entry keyed by the batch's record ids, all in one
    transaction — a worker killed mid-batch leaves nothing behind and the next run charges the same records.
    Error responses are never charged; aborted streams pay for the tokens that were streamed.

    A record's cost is what the gateway computed with the same rule and the price history it caches; a record served
    while its gateway still held the previous price (a price changed within the serving-epoch bound) is corrected
    to its charge here, so a usage record's cost always equals its ledger charge.
    """
    limit = limit or settings.BILLING_CHARGE_BATCH_SIZE
    with transaction.atomic():
        records = list(
            UsageRecord.objects.filter(public=True, charge__isnull=True, catalog_model__isnull=False)
            .exclude(status=UsageStatus.ERROR)
            .order_by("created_at", "id")
            .select_for_update(skip_locked=True, of=("self",))[:limit]
        )
        if not records:
            return 0
        # A record charged by a transaction that committed after our snapshot but before we locked it.
        done = set(
            UsageCharge.objects.filter(usage_record_id__in=[r.pk for r in records]).values_list(
                "usage_record_id", flat=True
            )
        )
        records = [r for r in records if r.pk not in done]
        model_ids = {r.catalog_model_id for r in records if r.catalog_model_id is not None}
        token_prices_seed(catalog_model_ids=model_ids)  # a charge points at a price row
        histories = token_price_histories(model_ids)
        by_org: dict[UUID, list[tuple[UsageRecord, int, Decimal]]] = defaultdict(list)
        corrected: list[UsageRecord] = []
        for record in records:
            assert record.catalog_model_id is not None  # filtered above
            rates = histories[record.catalog_model_id].at(record.started_at)
            assert rates.token_price_id is not None  # seeded above
            amount = pricing.token_amount(
                rates,
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                cached_tokens=record.cached_tokens,
            )
            if record.cost != amount or record.currency != rates.currency:
                record.cost, record.currency = amount, rates.currency
                corrected.append(record)
            by_org[record.org_id].append((record, rates.token_price_id, amount))
        charged = 0
        for org_id in sorted(by_org, key=str):  # one lock order for every worker
            items = by_org[org_id]
            total = sum((amount for _r, _p, amount in items), ZERO)
            first = min(r.started_at for r, _p, _a in items)
            last = max(r.started_at for r, _p, _a in items)
            entry, created = ledger_post(
                org=org_id,
                kind=EntryKind.TOKEN_CHARGE,
                amount=-total,
                key=usage_batch_key(r.pk for r, _p, _a in items),
                description=_("Token usage: %(n)d requests") % {"n": len(items)},
                period_start=first,
                period_end=last,
                data={
                    "requests": len(items),
                    "prompt_tokens": sum(r.prompt_tokens for r, _p, _a in items),
                    "completion_tokens": sum(r.completion_tokens for r, _p, _a in items),
                },
            )
            if not created:
                # The same batch was committed before, so its records carry charges already: nothing to do.
                continue
            UsageCharge.objects.bulk_create(
                [
                    UsageCharge(usage_record=r, org_id=org_id, token_price_id=p, entry=entry, amount=a)
                    for r, p, a in items
                ]
            )
            charged += len(items)
        if corrected:
            logger.info(
                "%d usage records were priced with a price no longer in force: set to their charge", len(corrected)
            )
            UsageRecord.objects.bulk_update(corrected, ["cost", "currency"])
    return charged
