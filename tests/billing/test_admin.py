"""Platform admin: credit limits, adjustments and new token prices go through the audited services."""

import re
from decimal import Decimal

from billing import services
from billing.models import BillingAccount, EntryKind, LedgerEntry, TokenPrice
from tenancy.models import AuditEvent


def test_admin_sets_credit_limit_and_posts_an_adjustment(admin_client, org):
    account = services.account_get_or_create(org=org)
    url = f"/admin/billing/billingaccount/{account.pk}/change/"
    assert admin_client.get(url).status_code == 200
    refused = admin_client.post(url, {"credit_limit": "0", "adjust_amount": "25", "adjust_reason": ""})
    assert refused.status_code == 200 and not LedgerEntry.objects.exists()
    response = admin_client.post(url, {"credit_limit": "200", "adjust_amount": "25", "adjust_reason": "welcome credit"})
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.credit_limit == Decimal("200") and account.balance == Decimal("25")
    assert LedgerEntry.objects.get(org=org).kind == EntryKind.ADJUSTMENT
    assert {"billing.credit_limit", "billing.adjust"} <= set(AuditEvent.objects.values_list("action", flat=True))
    assert admin_client.get("/admin/billing/ledgerentry/").status_code == 200
    assert BillingAccount.objects.count() == 1


def test_a_double_submitted_adjustment_posts_once(admin_client, org):
    account = services.account_get_or_create(org=org)
    url = f"/admin/billing/billingaccount/{account.pk}/change/"
    token = re.search(r'name="adjust_token" value="([^"]+)"', admin_client.get(url).content.decode()).group(1)
    assert token != re.search(r'name="adjust_token" value="([^"]+)"', admin_client.get(url).content.decode()).group(
        1
    )  # a fresh one per rendering
    form = {"credit_limit": "0", "adjust_amount": "25", "adjust_reason": "welcome credit", "adjust_token": token}
    assert admin_client.post(url, form).status_code == 302
    assert admin_client.post(url, form).status_code == 302  # the same submission again: nothing more
    account.refresh_from_db()
    assert account.balance == Decimal("25") and LedgerEntry.objects.filter(org=org).count() == 1
    assert AuditEvent.objects.filter(action="billing.adjust").count() == 1
    # the same form sent back with another amount is refused, not dropped silently and not posted
    response = admin_client.post(url, {**form, "adjust_amount": "30"}, follow=True)
    assert "already submitted" in response.content.decode()
    account.refresh_from_db()
    assert account.balance == Decimal("25") and LedgerEntry.objects.filter(org=org).count() == 1
    # a new rendering posts a new adjustment
    assert admin_client.post(url, {**form, "adjust_token": "x" * 22}).status_code == 302
    account.refresh_from_db()
    assert account.balance == Decimal("50") and LedgerEntry.objects.filter(org=org).count() == 2


def test_catalog_price_edit_in_admin_starts_a_new_price(admin_client, public_model):
    services.token_price_sync(catalog_model=public_model)
    response = admin_client.post(
        "/admin/catalog/catalogmodel/",
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-0-id": str(public_model.pk),
            "form-0-input_price_per_1k": "0.0008",
            "form-0-output_price_per_1k": "0.0016",
            "form-0-listed": "on",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    prices = list(TokenPrice.objects.filter(catalog_model=public_model).order_by("valid_from"))
    assert [(p.input_per_1k, p.output_per_1k) for p in prices] == [
        (Decimal("0.000600"), Decimal("0.001200")),
        (Decimal("0.000800"), Decimal("0.001600")),
    ]


def test_admin_adds_a_token_price_with_tiers(admin_client, public_model):
    response = admin_client.post(
        "/admin/billing/tokenprice/add/",
        {
            "catalog_model": str(public_model.pk),
            "input_per_1k": "0.0006",
            "output_per_1k": "0.0012",
            "cached_input_per_1k": "0.0001",
            "long_context_threshold": "32000",
            "long_input_per_1k": "0.0012",
            "long_output_per_1k": "0.0024",
            "valid_from_0": "2099-01-01",
            "valid_from_1": "00:00:00",
        },
    )
    assert response.status_code == 302
    price = TokenPrice.objects.get(catalog_model=public_model, long_context_threshold=32000)
    assert price.cached_input_per_1k == Decimal("0.0001")
    assert AuditEvent.objects.filter(action="billing.token_price").exists()
