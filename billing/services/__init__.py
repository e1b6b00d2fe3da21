"""Writes for billing: the ledger, per-token and per-instance charging, subscriptions, top-ups.

Every balance change goes through ``ledger_post``: the account row is locked (``select_for_update``), the entry is
inserted under its natural key (UNIQUE, so a replay changes nothing) and the balance is updated in the same
transaction. After commit the new spendable balance is published to the gateway.
"""

from __future__ import annotations

from billing.services.instances import service_settle, services_to_settle
from billing.services.ledger import (
    account_credit,
    account_get_or_create,
    account_set_credit_limit,
    account_welcome_credit,
    balance_publish,
    ledger_adjust,
    ledger_post,
)
from billing.services.prices import token_price_create, token_price_sync, token_prices_seed
from billing.services.subscriptions import (
    subscription_add_instances,
    subscription_cover,
    subscription_create,
    subscription_monthly_price,
    subscription_renew_due,
    subscription_set_auto_renew,
)
from billing.services.topups import stripe_event_handle, topup_create, topup_refund
from billing.services.usage_charges import usage_batch_key, usage_charge_pending

__all__ = [
    "account_credit",
    "account_get_or_create",
    "account_set_credit_limit",
    "account_welcome_credit",
    "balance_publish",
    "ledger_adjust",
    "ledger_post",
    "service_settle",
    "services_to_settle",
    "stripe_event_handle",
    "subscription_add_instances",
    "subscription_cover",
    "subscription_create",
    "subscription_monthly_price",
    "subscription_renew_due",
    "subscription_set_auto_renew",
    "token_price_create",
    "token_price_sync",
    "token_prices_seed",
    "topup_create",
    "topup_refund",
    "usage_batch_key",
    "usage_charge_pending",
]
