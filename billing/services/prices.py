"""Token prices: the history of per-token prices of public models (writes; reads are ``billing.selectors``).

Every new row changes what the gateway charges, so it bumps the serving epoch (``core.signals.serving_changed``,
after commit): the gateway refreshes its cached price histories as it does for any other serving change.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from billing.models import TokenPrice
from billing.pricing import PRICE_EPOCH
from catalog.models import CatalogModel
from core.errors import ApplicationError
from core.signals import serving_changed_on_commit
from tenancy.services import audit_record

if TYPE_CHECKING:
    from django.contrib.auth.models import User

_TIER_FIELDS = ("cached_input_per_1k", "long_context_threshold", "long_input_per_1k", "long_output_per_1k")


def token_price_sync(*, catalog_model: CatalogModel) -> TokenPrice | None:
    """Record the catalog's current per-token prices if they differ from the latest price (new row from now).

    The first row of a model is valid from PRICE_EPOCH, so usage recorded before any sync is still priced, and at
    the price ``billing.selectors.token_price_histories`` gives a model without rows.
    """
    latest = catalog_model.token_prices.order_by("-valid_from").first()
    if latest is not None and (latest.input_per_1k, latest.output_per_1k, latest.currency) == (
        catalog_model.input_price_per_1k,
        catalog_model.output_price_per_1k,
        catalog_model.currency,
    ):
        return None
    tiers = {f: getattr(latest, f) for f in _TIER_FIELDS} if latest is not None else {}
    price = TokenPrice(
        catalog_model=catalog_model,
        currency=catalog_model.currency,
        input_per_1k=catalog_model.input_price_per_1k,
        output_per_1k=catalog_model.output_price_per_1k,
        valid_from=timezone.now() if latest is not None else PRICE_EPOCH,
        **tiers,
    )
    TokenPrice.objects.bulk_create([price], ignore_conflicts=True)  # a concurrent first seed wins harmlessly
    if latest is not None:  # a first row is the price reads assumed already: nothing for the gateway to refresh
        serving_changed_on_commit()
    return price


def token_prices_seed(*, catalog_model_ids: Iterable[int]) -> None:
    """Give each of these models that has no price row yet its first one, from its catalog price (before charging).

    The row written is the price reads already assumed (see ``token_price_sync``), so no figure changes.
    """
    ids = set(catalog_model_ids)
    seeded = set(TokenPrice.objects.filter(catalog_model_id__in=ids).values_list("catalog_model_id", flat=True))
    for model in CatalogModel.objects.filter(pk__in=ids - seeded):
        token_price_sync(catalog_model=model)


@transaction.atomic
def token_price_create(
    *,
    catalog_model: CatalogModel,
    input_per_1k: Decimal,
    output_per_1k: Decimal,
    cached_input_per_1k: Decimal | None = None,
    long_context_threshold: int | None = None,
    long_input_per_1k: Decimal | None = None,
    long_output_per_1k: Decimal | None = None,
    valid_from: datetime | None = None,
    actor: User | None = None,
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
        created_by=actor if actor is not None and actor.pk else None,
        **rates,
    )
    serving_changed_on_commit()
    audit_record(
        org=None,
        actor=actor,
        action="billing.token_price",
        target=price,
        data={"model": catalog_model.slug, **{k: str(v) for k, v in rates.items() if v is not None}},
    )
    return price
