"""Accounts and the append-only ledger: every money movement is one row with a unique natural key."""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from billing.models import (
    BillingAccount,
    EntryKind,
    LedgerEntry,
)
from core import signals
from core.errors import ApplicationError
from core.money import quantize_posted
from tenancy.models import Organization
from tenancy.services import audit_record

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from deployments.models import Service

logger = logging.getLogger(__name__)

ADJUSTMENT_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # names one admin adjustment submission


def account_get_or_create(*, org: Organization) -> BillingAccount:
    account, _created = BillingAccount.objects.get_or_create(org=org, defaults={"currency": settings.CURRENCY})
    return account


def _lock_account(org_id: UUID) -> BillingAccount:
    BillingAccount.objects.get_or_create(org_id=org_id, defaults={"currency": settings.CURRENCY})
    return BillingAccount.objects.select_for_update().get(org_id=org_id)


def _publish_after_commit(org_id: UUID) -> None:
    transaction.on_commit(lambda: balance_publish(org_id=org_id))


def balance_publish(*, org_id: UUID) -> None:
    """Tell the gateway's reservations what the org may spend now (balance + credit limit)."""
    from billing.selectors import org_spendable_balance

    try:
        signals.balance_changed.send(sender=None, org_id=org_id, available=org_spendable_balance(org_id))
    except Exception:  # Redis down: the gateway falls back to the loader; the next ledger change republishes
        logger.exception("publishing the spendable balance of %s failed", org_id)


def ledger_post(
    *,
    org: Organization | UUID,
    kind: str,
    amount: Decimal,
    key: str,
    description: str = "",
    service: Service | None = None,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    data: dict[str, Any] | None = None,
    actor: User | None = None,
) -> tuple[LedgerEntry, bool]:
    """Append one entry and move the balance; returns ``(entry, created)``. A known ``key`` changes nothing."""
    if kind not in EntryKind.values:
        raise ApplicationError(_("Unknown ledger entry kind."), field="kind")
    amount = Decimal(amount)
    if not amount.is_finite():
        raise ApplicationError(_("Enter a valid amount."), field="amount")
    org_id = org.pk if isinstance(org, Organization) else org
    with transaction.atomic():
        account = _lock_account(org_id)
        entry = LedgerEntry(
            org_id=org_id,
            account=account,
            kind=kind,
            amount=amount,
            balance_after=account.balance + amount,
            currency=account.currency,
            key=key,
            description=description[:300],
            service=service,
            period_start=period_start,
            period_end=period_end,
            data=data or {},
            created_by=actor if actor is not None and actor.pk else None,
        )
        try:
            with transaction.atomic():
                entry.save()
        except IntegrityError:
            existing = LedgerEntry.objects.filter(key=key).first()
            if existing is None:
                raise
            return existing, False
        account.balance = entry.balance_after
        if account.spendable <= 0:
            account.overdrawn_since = account.overdrawn_since or timezone.now()
        else:
            account.overdrawn_since = None
        account.save(update_fields=["balance", "overdrawn_since", "updated_at"])
        _publish_after_commit(org_id)
    return entry, True


def ledger_adjust(
    *, org: Organization, amount: Decimal, reason: str, actor: User | None, token: str | None = None
) -> LedgerEntry:
    """An admin's manual credit (positive) or debit (negative), with a reason, audited.

    ``token`` names one submission (the admin form renders a fresh one): posting it again changes nothing and
    returns the first entry, so a double submit credits once; the same token with another amount or reason is
    refused rather than dropped. Without a token every call posts.
    """
    amount = quantize_posted(amount)
    if amount == 0:
        raise ApplicationError(_("An adjustment needs a non-zero amount."), field="amount")
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(_("Give a reason for the adjustment."), field="reason")
    if token is None:
        token = secrets.token_urlsafe(16)
    elif not ADJUSTMENT_TOKEN.fullmatch(token):
        raise ApplicationError(_("This adjustment form is invalid; reload the page."), field="token")
    with transaction.atomic():
        entry, created = ledger_post(
            org=org,
            kind=EntryKind.ADJUSTMENT,
            amount=amount,
            key=f"adjustment:{org.pk}:{token}",
            description=reason,
            actor=actor,
        )
        if not created:
            if entry.org_id != org.pk or entry.amount != amount or entry.description != reason[:300]:
                raise ApplicationError(
                    _(
                        "This adjustment form was already submitted with other values; reload the "
                        "page to post another adjustment."
                    ),
                    field="token",
                )
            return entry
        audit_record(
            org=org, actor=actor, action="billing.adjust", target=entry, data={"amount": str(amount), "reason": reason}
        )
    return entry


@transaction.atomic
def account_set_credit_limit(*, org: Organization, credit_limit: Decimal, actor: User | None) -> BillingAccount:
    credit_limit = quantize_posted(credit_limit)
    if credit_limit < 0:
        raise ApplicationError(_("The credit limit cannot be negative."), field="credit_limit")
    account = _lock_account(org.pk)
    previous = account.credit_limit
    account.credit_limit = credit_limit
    if account.spendable <= 0:
        account.overdrawn_since = account.overdrawn_since or timezone.now()
    else:
        account.overdrawn_since = None
    account.save(update_fields=["credit_limit", "overdrawn_since", "updated_at"])
    audit_record(
        org=org,
        actor=actor,
        action="billing.credit_limit",
        target=account,
        data={"from": str(previous), "to": str(credit_limit)},
    )
    _publish_after_commit(org.pk)
    return account
