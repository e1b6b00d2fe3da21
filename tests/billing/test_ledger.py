"""The ledger: idempotent postings, a balance that matches the entries under concurrency, published to the gateway."""

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection

from billing import services
from billing.models import BillingAccount, EntryKind, LedgerEntry
from billing.selectors import org_spendable_balance
from core.errors import ApplicationError
from gateway.admission import published_balance
from tenancy.models import AuditEvent


def test_replayed_key_changes_nothing(org):
    entry, created = services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("100"), key="k-1")
    again, created_again = services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("100"), key="k-1")
    assert created and not created_again and again.pk == entry.pk
    assert BillingAccount.objects.get(org=org).balance == Decimal("100")
    assert entry.balance_after == Decimal("100")


def test_entries_are_append_only(org):
    entry, _ = services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("5"), key="k-2")
    entry.amount = Decimal("500")
    with pytest.raises(ValueError):
        entry.save()


def test_spendable_is_balance_plus_credit_limit_and_overdraft_is_tracked(org, alice):
    assert org_spendable_balance(org.pk) == 0
    services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("10"), key="t")
    services.ledger_post(org=org, kind=EntryKind.TOKEN_CHARGE, amount=Decimal("-12"), key="c")
    account = BillingAccount.objects.get(org=org)
    assert account.overdrawn_since is not None
    services.account_set_credit_limit(org=org, credit_limit=Decimal("50"), actor=alice)
    account.refresh_from_db()
    assert org_spendable_balance(org.pk) == Decimal("48") and account.overdrawn_since is None
    assert AuditEvent.objects.filter(org=org, action="billing.credit_limit").exists()
    with pytest.raises(ApplicationError):
        services.account_set_credit_limit(org=org, credit_limit=Decimal("-1"), actor=alice)


def test_admin_adjustment_needs_a_reason_and_is_audited(org, alice):
    with pytest.raises(ApplicationError):
        services.ledger_adjust(org=org, amount=Decimal("5"), reason=" ", actor=alice)
    entry = services.ledger_adjust(org=org, amount=Decimal("-2.50"), reason="goodwill reversal", actor=alice)
    assert entry.kind == EntryKind.ADJUSTMENT and entry.amount == Decimal("-2.50")
    assert AuditEvent.objects.filter(org=org, action="billing.adjust").count() == 1
    assert services.ledger_adjust(org=org, amount=Decimal("-2.50"), reason="goodwill reversal", actor=alice) != entry


def test_an_adjustment_token_posts_once(org, alice):
    first = services.ledger_adjust(org=org, amount=Decimal("7"), reason="credit", actor=alice, token="t" * 16)
    again = services.ledger_adjust(org=org, amount=Decimal("7"), reason="credit", actor=alice, token="t" * 16)
    assert again == first and BillingAccount.objects.get(org=org).balance == Decimal("7")
    with pytest.raises(ApplicationError, match="already submitted"):
        services.ledger_adjust(org=org, amount=Decimal("8"), reason="credit", actor=alice, token="t" * 16)
    with pytest.raises(ApplicationError, match="invalid"):
        services.ledger_adjust(org=org, amount=Decimal("7"), reason="credit", actor=alice, token="short")
    assert LedgerEntry.objects.filter(org=org).count() == 1
    assert AuditEvent.objects.filter(org=org, action="billing.adjust").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_postings_keep_balance_equal_to_the_sum(org):
    def post(i):
        try:
            services.ledger_post(
                org=org,
                kind=EntryKind.TOKEN_CHARGE if i % 2 else EntryKind.TOPUP,
                amount=Decimal("-1.25") if i % 2 else Decimal("3.50"),
                key=f"c-{i % 30}",
            )
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, range(60)))  # every key posted twice, concurrently
    entries = LedgerEntry.objects.filter(org=org)
    assert entries.count() == 30
    total = sum(e.amount for e in entries)
    assert (
        BillingAccount.objects.get(org=org).balance == total == Decimal("15") * Decimal("3.50") - 15 * Decimal("1.25")
    )
    # balance_after is a running total in commit order
    running = Decimal(0)
    for e in entries.order_by("id"):
        running += e.amount
        assert e.balance_after == running
    # published to the gateway after commit: what billing says the org may spend
    assert published_balance(org.pk) == total
