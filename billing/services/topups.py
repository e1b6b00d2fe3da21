"""Stripe top-ups and refunds, and the webhook events that move the balance."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from billing import stripe as stripe_api
from billing.models import (
    BillingAccount,
    EntryKind,
    StripeEvent,
    TopUp,
    TopUpStatus,
)
from billing.services.ledger import account_get_or_create, ledger_post
from billing.texts import LEDGER
from core.crypto import encrypt
from core.errors import ApplicationError
from core.money import from_minor_units, quantize_posted
from tenancy.permissions import require
from tenancy.services import audit_record

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from tenancy.models import Organization

logger = logging.getLogger(__name__)


def topup_create(*, org: Organization, amount: Decimal, actor: User | None) -> TopUp:
    """Start a top-up: a Stripe PaymentIntent for ``amount``; the balance moves only when Stripe confirms payment."""
    require(actor, org, "billing.topup")
    amount = Decimal(amount)
    if amount != quantize_posted(amount):
        raise ApplicationError(_("Use at most two decimal places."), field="amount")
    if not settings.BILLING_TOPUP_MIN <= amount <= settings.BILLING_TOPUP_MAX:
        raise ApplicationError(
            _("Top up between %(min)s and %(max)s.")
            % {"min": settings.BILLING_TOPUP_MIN, "max": settings.BILLING_TOPUP_MAX},
            field="amount",
        )
    account = account_get_or_create(org=org)
    if not account.stripe_customer_id:
        customer_id = stripe_api.customer_create(
            org_id=str(org.pk), name=org.name, email=getattr(actor, "email", "") or ""
        )
        # Two concurrent first top-ups may both create a customer; the first one stored is kept.
        BillingAccount.objects.filter(pk=account.pk, stripe_customer_id="").update(stripe_customer_id=customer_id)
        account.refresh_from_db(fields=["stripe_customer_id"])
    intent = stripe_api.payment_intent_create(
        customer_id=account.stripe_customer_id, amount=amount, currency=account.currency, metadata={"org_id": org.pk}
    )
    with transaction.atomic():
        topup = TopUp.objects.create(
            org=org,
            amount=amount,
            currency=account.currency,
            payment_intent_id=intent.id,
            client_secret_encrypted=encrypt(intent.client_secret) if intent.client_secret else "",
            created_by=actor if getattr(actor, "pk", None) else None,
        )
        audit_record(
            org=org,
            actor=actor,
            action="billing.topup_start",
            target=topup,
            data={"amount": str(amount), "payment_intent": intent.id},
        )
    return topup


def topup_refund(*, topup: TopUp, amount: Decimal | None, actor: User | None) -> str:
    """Ask Stripe to refund (part of) a paid top-up; the balance is debited when ``charge.refunded`` arrives."""
    if topup.status not in (TopUpStatus.SUCCEEDED, TopUpStatus.PARTIALLY_REFUNDED):
        raise ApplicationError(_("Only a paid top-up can be refunded."), code="not_refundable")
    if amount is not None:
        amount = quantize_posted(amount)
        if amount <= 0 or amount > topup.amount - topup.refunded_amount:
            raise ApplicationError(_("The refund must be positive and at most what is left to refund."), field="amount")
    refund_id = stripe_api.refund_create(
        payment_intent_id=topup.payment_intent_id, amount=amount, currency=topup.currency
    )
    audit_record(
        org=topup.org,
        actor=actor,
        action="billing.topup_refund",
        target=topup,
        data={"amount": str(amount) if amount is not None else "all", "refund": refund_id},
    )
    return refund_id


def stripe_event_handle(*, event: dict[str, Any]) -> bool:
    """Apply one verified Stripe event exactly once (by event id); returns False for a replay."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                StripeEvent.objects.create(event_id=event["id"], type=event["type"], payload=event)
        except IntegrityError:
            return False
        obj = (event.get("data") or {}).get("object") or {}
        handler = _STRIPE_HANDLERS.get(event["type"])
        if handler is not None:
            handler(event, obj)
    return True


def _topup_for(payment_intent_id: str | None) -> TopUp | None:
    if not payment_intent_id:
        return None
    topup = TopUp.objects.select_for_update().select_related("org").filter(payment_intent_id=payment_intent_id).first()
    if topup is None:
        logger.warning("Stripe event for unknown PaymentIntent %s ignored", payment_intent_id)
    return topup


def _on_payment_succeeded(event: dict[str, Any], intent: dict[str, Any]) -> None:
    topup = _topup_for(intent.get("id"))
    if topup is None:
        return
    currency = (intent.get("currency") or topup.currency).upper()
    received = intent.get("amount_received") or intent["amount"]
    amount = from_minor_units(received, currency)
    ledger_post(
        org=topup.org,
        kind=EntryKind.TOPUP,
        amount=amount,
        key=f"stripe:pi:{topup.payment_intent_id}",
        description=LEDGER("card_topup"),
        data={"payment_intent": topup.payment_intent_id, "event": event["id"]},
    )
    topup.status = TopUpStatus.SUCCEEDED
    topup.failure_message = ""
    topup.client_secret_encrypted = ""  # paid: no page needs it any more
    topup.save(update_fields=["status", "failure_message", "client_secret_encrypted", "updated_at"])


def _on_payment_failed(event: dict[str, Any], intent: dict[str, Any]) -> None:
    topup = _topup_for(intent.get("id"))
    if topup is None or topup.status != TopUpStatus.PENDING:
        return
    error = intent.get("last_payment_error") or {}
    topup.status = TopUpStatus.FAILED
    topup.failure_message = (error.get("message") or _("The payment failed."))[:300]
    topup.save(update_fields=["status", "failure_message", "updated_at"])


def _on_charge_refunded(event: dict[str, Any], charge: dict[str, Any]) -> None:
    topup = _topup_for(charge.get("payment_intent"))
    if topup is None:
        return
    currency = (charge.get("currency") or topup.currency).upper()
    refunded_total = from_minor_units(charge.get("amount_refunded") or 0, currency)
    delta = refunded_total - topup.refunded_amount
    if delta <= 0:
        return
    # Keyed by the cumulative refunded amount: each refund step of a charge debits once, whatever the event id.
    ledger_post(
        org=topup.org,
        kind=EntryKind.REFUND,
        amount=-delta,
        key=f"stripe:refund:{charge.get('id')}:{refunded_total}",
        description=LEDGER("card_refund"),
        data={"charge": charge.get("id"), "event": event["id"]},
    )
    topup.refunded_amount = refunded_total
    topup.status = TopUpStatus.REFUNDED if refunded_total >= topup.amount else TopUpStatus.PARTIALLY_REFUNDED
    topup.save(update_fields=["refunded_amount", "status", "updated_at"])


_STRIPE_HANDLERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "payment_intent.succeeded": _on_payment_succeeded,
    "payment_intent.payment_failed": _on_payment_failed,
    "charge.refunded": _on_charge_refunded,
}
