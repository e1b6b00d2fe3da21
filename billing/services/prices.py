"""Token prices: the history of per-token prices of public models."""

from __future__ import annotations

import bisect
import logging
import re
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from billing.models import (
    TokenPrice,
)
from core.errors import ApplicationError
from tenancy.services import audit_record

logger = logging.getLogger(__name__)

ADJUSTMENT_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # names one admin adjustment submission
# Usage before the first recorded price is charged with the first price (prices are seeded lazily).
PRICE_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.get_fixed_timezone(0))


_PRICE_FIELDS = (
    "input_per_1k",
    "output_per_1k",
    "cached_input_per_1k",
    "long_context_threshold",
    "long_input_per_1k",
    "long_output_per_1k",
)


def token_price_sync(*, catalog_model) -> TokenPrice | None:
    """Record the catalog's current per-token prices if they differ from the price in force (new row from now).

    The first row of a model is valid from PRICE_EPOCH, so usage recorded before any sync is still priced.
    """
    latest = catalog_model.token_prices.order_by("-valid_from").first()
    if latest is not None and (latest.input_per_1k, latest.output_per_1k, latest.currency) == (
        catalog_model.input_price_per_1k,
        catalog_model.output_price_per_1k,
        catalog_model.currency,
    ):
        return None
    extra = {f: getattr(latest, f) for f in _PRICE_FIELDS[2:]} if latest is not None else {}
    price = TokenPrice(
        catalog_model=catalog_model,
        currency=catalog_model.currency,
        input_per_1k=catalog_model.input_price_per_1k,
        output_per_1k=catalog_model.output_price_per_1k,
        valid_from=timezone.now() if latest is not None else PRICE_EPOCH,
        **extra,
    )
    TokenPrice.objects.bulk_create([price], ignore_conflicts=True)  # a concurrent first seed wins harmlessly
    return price


@transaction.atomic
def token_price_create(
    *,
    catalog_model,
    input_per_1k: Decimal,
    output_per_1k: Decimal,
    cached_input_per_1k: Decimal | None = None,
    long_context_threshold: int | None = None,
    long_input_per_1k: Decimal | None = None,
    long_output_per_1k: Decimal | None = None,
    valid_from=None,
    actor=None,
) -> TokenPrice:
    """A new price from ``valid_from`` (default now; never in the past, which would re-price charged usage)."""
    now = timezone.now()
    valid_from = valid_from or now
    if valid_from < now - timedelta(seconds=5):
        raise ApplicationError(_("A new price cannot start in the past."), field="valid_from")
    rates = {
        "input_per_1k": input_per_1k,
        "output_per_1k": output_per_1k,
        "cached_input_per_1k": cached_input_per_1k,
        "long_input_per_1k": long_input_per_1k,
        "long_output_per_1k": long_output_per_1k,
    }
    for field, value in rates.items():
        if value is not None and Decimal(value) < 0:
            raise ApplicationError(_("Prices cannot be negative."), field=field)
    if long_context_threshold is not None and (long_input_per_1k is None or long_output_per_1k is None):
        raise ApplicationError(
            _("A long-context tier needs both its input and output price."), field="long_input_per_1k"
        )
    if catalog_model.token_prices.filter(valid_from=valid_from).exists():
        raise ApplicationError(_("A price starting at that moment already exists."), field="valid_from")
    price = TokenPrice.objects.create(
        catalog_model=catalog_model,
        currency=catalog_model.currency,
        long_context_threshold=long_context_threshold,
        valid_from=valid_from,
        created_by=actor if getattr(actor, "pk", None) else None,
        **rates,
    )
    audit_record(
        org=None,
        actor=actor,
        action="billing.token_price",
        target=price,
        data={"model": catalog_model.slug, **{k: str(v) for k, v in rates.items() if v is not None}},
    )
    return price


def _price_tables(catalog_model_ids) -> dict[int, tuple[list[datetime], list[TokenPrice]]]:
    from catalog.models import CatalogModel

    ids = set(catalog_model_ids)
    seeded = set(TokenPrice.objects.filter(catalog_model_id__in=ids).values_list("catalog_model_id", flat=True))
    for model in CatalogModel.objects.filter(pk__in=ids - seeded):
        token_price_sync(catalog_model=model)
    tables: dict[int, tuple[list, list]] = {}
    for price in TokenPrice.objects.filter(catalog_model_id__in=ids).order_by("catalog_model_id", "valid_from"):
        starts, prices = tables.setdefault(price.catalog_model_id, ([], []))
        starts.append(price.valid_from)
        prices.append(price)
    return tables


def price_in_force(tables, catalog_model_id: int, at: datetime) -> TokenPrice:
    starts, prices = tables[catalog_model_id]
    index = bisect.bisect_right(starts, at) - 1
    return prices[max(index, 0)]
