"""Ledger and statement descriptions in zh-Hans: stored as a code with parameters, shown in the reader's language."""

from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing import services as billing
from billing.models import EntryKind, LedgerEntry
from tests.billing.conftest import make_usage
from tests.support.text import visible_text

pytestmark = pytest.mark.django_db


def test_the_ledger_and_statement_describe_entries_in_chinese(alice_client, org, public_model, region):
    billing.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("100"), key="topup")
    make_usage(org, public_model)
    billing.usage_charge_pending()
    entry = LedgerEntry.objects.get(kind=EntryKind.TOKEN_CHARGE)
    assert (entry.description, entry.description_code) == ("Token usage: 1 request", "token_usage")
    ledger = visible_text(alice_client.get("/billing/ledger/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode())
    now = timezone.localtime()
    statement = visible_text(
        alice_client.get(
            reverse("billing:statement", args=[now.year, now.month]), HTTP_ACCEPT_LANGUAGE="zh-hans"
        ).content.decode()
    )
    for page in (ledger, statement):
        assert "Token 用量：1 次请求" in page
        assert "Token usage" not in page and "requests" not in page


def test_ledger_date_filters_are_typed_dates_with_a_translated_format(alice_client):
    page = alice_client.get("/billing/ledger/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert 'type="date"' not in page and 'placeholder="年-月-日"' in page
    filtered = alice_client.get("/billing/ledger/?start=2026-01-01&end=2026-01-31").content.decode()
    assert 'value="2026-01-01"' in filtered and "must not be after" not in filtered
