"""Accounts and the append-only ledger: every money movement is one row with a unique natural key."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from core.i18n import Text, stored_text
from core.money import quantize_posted
from tenancy.models import Organization
from tenancy.permissions import require_platform_staff
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


@dataclass(frozen=True)
class Posting:
    """One entry for ``ledger_post_many``: the arguments of ``ledger_post`` that batch callers use."""

    org_id: UUID
    kind: str
    amount: Decimal
    key: str
    description: str | Text = ""
    period_start: datetime | None = None
    period_end: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _check_posting(kind: str, amount: Decimal) -> Decimal:
    if kind not in EntryKind.values:
        raise ApplicationError(_("Unknown ledger entry kind."), field="kind")
    amount = Decimal(amount)
    if not amount.is_finite():
        raise ApplicationError(_("Enter a valid amount."), field="amount")
    return amount


def _apply(account: BillingAccount, amount: Decimal) -> None:
    account.balance += amount
    if account.spendable <= 0:
        account.overdrawn_since = account.overdrawn_since or timezone.now()
    else:
        account.overdrawn_since = None


def ledger_post_many(postings: Sequence[Posting]) -> list[tuple[LedgerEntry, bool]]:
    """``ledger_post`` for many entries in a fixed number of queries; returns ``(entry, created)`` per posting.

    Same rules as ``ledger_post``: every account is locked (all in one statement, in org id order, so two batch
    posters never deadlock; a single ``ledger_post`` locks one account and cannot close a cycle), entries are
    inserted with their balance and the balances saved in the same transaction, balances published after commit.
    If any key is already posted (a replay) the whole insert is refused by the unique key and the postings fall
    back to ``ledger_post`` one by one, which returns the existing entries: a replay changes nothing.
    """
    if not postings:
        return []
    amounts = [_check_posting(p.kind, p.amount) for p in postings]
    org_ids = sorted({p.org_id for p in postings}, key=str)
    with transaction.atomic():
        accounts = {a.org_id: a for a in BillingAccount.objects.select_for_update().filter(org_id__in=org_ids)}
        if missing := [org_id for org_id in org_ids if org_id not in accounts]:
            BillingAccount.objects.bulk_create(
                [BillingAccount(org_id=org_id, currency=settings.CURRENCY) for org_id in missing], ignore_conflicts=True
            )
            accounts |= {a.org_id: a for a in BillingAccount.objects.select_for_update().filter(org_id__in=missing)}
        entries = []
        for posting, amount in zip(postings, amounts, strict=True):
            account = accounts[posting.org_id]
            _apply(account, amount)
            description, code, params = stored_text(posting.description)
            entries.append(
                LedgerEntry(
                    org_id=posting.org_id,
                    account=account,
                    kind=posting.kind,
                    amount=amount,
                    balance_after=account.balance,
                    currency=account.currency,
                    key=posting.key,
                    description=description[:300],
                    description_code=code,
                    description_params=params,
                    period_start=posting.period_start,
                    period_end=posting.period_end,
                    data=posting.data,
                )
            )
        try:
            with transaction.atomic():
                LedgerEntry.objects.bulk_create(entries)
        except IntegrityError:  # the in-memory balances are dropped: ledger_post locks and reads each account again
            return [
                ledger_post(
                    org=p.org_id,
                    kind=p.kind,
                    amount=p.amount,
                    key=p.key,
                    description=p.description,
                    period_start=p.period_start,
                    period_end=p.period_end,
                    data=p.data,
                )
                for p in postings
            ]
        now = timezone.now()
        for account in accounts.values():
            account.updated_at = now
        BillingAccount.objects.bulk_update(list(accounts.values()), ["balance", "overdrawn_since", "updated_at"])
        transaction.on_commit(lambda: balances_publish(org_ids=org_ids))
    return [(entry, True) for entry in entries]


def balances_publish(*, org_ids: Sequence[UUID]) -> None:
    """``balance_publish`` for many orgs, read in one query."""
    from billing.selectors import org_spendable_balances

    try:
        for org_id, available in org_spendable_balances(org_ids).items():
            signals.balance_changed.send(sender=None, org_id=org_id, available=available)
    except Exception:  # Redis down: the gateway falls back to the loader; the next ledger change republishes
        logger.exception("publishing the spendable balances of %d orgs failed", len(org_ids))


def ledger_post(
    *,
    org: Organization | UUID,
    kind: str,
    amount: Decimal,
    key: str,
    description: str | Text = "",
    service: Service | None = None,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    data: dict[str, Any] | None = None,
    actor: User | None = None,
) -> tuple[LedgerEntry, bool]:
    """Append one entry and move the balance; returns ``(entry, created)``. A known ``key`` changes nothing."""
    amount = _check_posting(kind, amount)
    org_id = org.pk if isinstance(org, Organization) else org
    english, code, params = stored_text(description)
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
            description=english[:300],
            description_code=code,
            description_params=params,
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
        _apply(account, amount)
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


def account_credit(
    *, org: Organization, amount: Decimal, reason: str, actor: User | None, token: str | None = None
) -> LedgerEntry:
    """A platform admin credits (or debits) any organization, with or without a billing account yet (one is
    created); ``ledger_adjust``'s rules, idempotent by ``token`` and audited. The entry's ``balance_after`` is the
    new balance."""
    require_platform_staff(actor)
    return ledger_adjust(org=org, amount=amount, reason=reason, actor=actor, token=token)


def account_welcome_credit(*, org: Organization) -> LedgerEntry | None:
    """``BILLING_WELCOME_CREDIT`` for a new organization, once (key ``welcome:<org id>``); None when it is 0."""
    amount = quantize_posted(settings.BILLING_WELCOME_CREDIT)
    if amount <= 0:
        return None
    entry, created = ledger_post(
        org=org, kind=EntryKind.ADJUSTMENT, amount=amount, key=f"welcome:{org.pk}", description=_("Welcome credit")
    )
    if created:
        audit_record(org=org, actor=None, action="billing.welcome_credit", target=entry, data={"amount": str(amount)})
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
