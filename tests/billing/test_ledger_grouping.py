"""Instance charges settled every 5 minutes read as one line per service and hour (ledger) or day (statement);
the rows themselves stay as posted, and every total is the same."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from billing import selectors, services
from billing.models import EntryKind, LedgerEntry
from tests.billing.conftest import make_service, meter, observed

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # 16:00 in Shanghai, the platform's zone


@pytest.fixture
def settled(org, other_org, public_model, region):
    """Two services settled every 5 minutes for 2 h 30 min, a token charge between their settlements."""
    with time_machine.travel(T0, tick=False):
        services.ledger_post(org=org, kind=EntryKind.TOPUP, amount=Decimal("500"), key="topup")
    a = make_service(org, public_model, region, name="alpha", hourly="3.52")
    b = make_service(org, public_model, region, name="beta", hourly="1.00")
    outsider = make_service(other_org, public_model, region, name="gamma", hourly="1.00")
    for s in (a, b, outsider):
        meter(s, T0, 2)
    for step in range(1, 31):
        moment = T0 + timedelta(minutes=5 * step)
        for s in (a, b, outsider):
            observed(s, moment)
        with time_machine.travel(moment + timedelta(seconds=3), tick=False):
            for s in (a, b, outsider):
                services.service_settle(service_id=s.pk)
            if step == 13:
                services.ledger_post(org=org, kind=EntryKind.TOKEN_CHARGE, amount=Decimal("-0.5"), key="tokens")
    return a, b


def rows_of(page: str) -> list[str]:
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r)).strip() for r in re.findall(r"<tr.*?</tr>", body, re.S)]


def test_ledger_shows_one_line_per_service_and_hour_with_exact_sums(
    org, alice_client, settled, django_assert_max_num_queries
):
    a, b = settled
    with time_machine.travel(T0 + timedelta(hours=3), tick=False), django_assert_max_num_queries(12):
        page = alice_client.get("/billing/ledger/").content.decode()
    rows = rows_of(page)
    # 08:00–09:00 (12 settlements), 09:00–10:00 (12), 10:00–10:30 (6), per service; the token charge; the top-up
    assert len(rows) == 2 * 3 + 2
    assert sum("12 settlements" in r for r in rows) == 4 and sum("6 settlements" in r for r in rows) == 2
    lines = selectors.ledger_lines_load(selectors.ledger_lines(org))
    for service in (a, b):
        entries = LedgerEntry.objects.filter(service=service, kind=EntryKind.INSTANCE_CHARGE)
        assert entries.count() == 30  # the rows stay as posted
        mine = [line for line in lines if line.entry.service_id == service.pk]
        assert sum(line.amount for line in mine) == sum(e.amount for e in entries)
        first_hour = [line for line in mine if line.period_start == T0]
        assert first_hour[0].amount == Decimal(-2) * service.hourly_price  # 2 instances for exactly 1 h
        assert first_hour[0].period_end == T0 + timedelta(hours=1)
    assert sum(line.amount for line in lines) == sum(e.amount for e in LedgerEntry.objects.filter(org=org))
    # each line's balance is the balance after its latest row
    assert lines[0].entry.balance_after == LedgerEntry.objects.filter(org=org).order_by("-id").first().balance_after


def test_ledger_filter_and_pages_count_lines(org, alice_client, settled):
    with time_machine.travel(T0 + timedelta(hours=3), tick=False):
        page = alice_client.get("/billing/ledger/?kind=instance_charge").content.decode()
    assert len(rows_of(page)) == 6 and "Page 1 of" not in page


def test_outsiders_instance_lines_stay_theirs(charlie_client, settled):
    page = charlie_client.get("/billing/ledger/").content.decode()
    assert "alpha" not in page and "beta" not in page and "gamma" in page


def test_statement_groups_per_day_and_keeps_its_totals_and_csv_rows(org, alice_client, settled):
    with time_machine.travel(T0 + timedelta(hours=3), tick=False):
        page = alice_client.get("/billing/statements/2026/3/").content.decode()
        csv_text = b"".join(alice_client.get("/billing/statements/2026/3/csv/").streaming_content).decode()
    statement = selectors.statement(org, datetime(2026, 3, 1).date())
    entries = LedgerEntry.objects.filter(org=org)
    assert len(statement.entries) == entries.count() == 1 + 1 + 2 * 30
    assert statement.charges == -sum(e.amount for e in entries if e.amount < 0)
    assert statement.closing == sum(e.amount for e in entries)
    # one line per service for the day, one for the token charge, one for the top-up
    lines = statement.lines
    assert len(lines) == 4 and sum(line.amount for line in lines) == statement.closing
    assert [line.count for line in lines if line.entry.service_id] == [30, 30]
    rows = rows_of(page.split("<h2>Entries</h2>", 1)[1])
    assert len(rows) == 4 and sum("30 settlements" in r for r in rows) == 2
    assert len(list(csv.reader(io.StringIO(csv_text)))) == 1 + len(statement.entries)  # every row exported
