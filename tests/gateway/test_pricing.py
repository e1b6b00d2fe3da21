"""One price for each request: what the playground shows, the usage record's cost and the ledger's charge agree,
also right after an admin changes the price (cached-input and long-context tiers included) and when rounding."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.utils import timezone

from billing import services
from billing.models import UsageCharge
from billing.pricing import token_amount
from gateway import lookups
from gateway.core import chat_stream
from gateway.store import sredis
from metering import ingestion
from metering.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "public/tiny-chat"
SHORT = {"messages": [{"role": "user", "content": "Tell me about UDP."}], "max_tokens": 5, "ignore_eos": True}
LONG_TEXT = " ".join(f"Paragraph {i}: datagrams are sent without a handshake or retransmission." for i in range(40))
LONG = {"messages": [{"role": "user", "content": LONG_TEXT}], "max_tokens": 5, "ignore_eos": True}


@pytest_asyncio.fixture(autouse=True)
async def _fresh_stream_and_session():
    from gateway.transport import close_upstream_sessions

    sredis().delete(ingestion.stream_key())
    yield
    await close_upstream_sessions()  # the session belongs to this test's event loop


async def _answer(org, user, body) -> dict:
    items = [item async for item in chat_stream(org=org, model_id=MODEL, body=body, user=user)]
    assert items[-1]["type"] == "summary" and items[-1]["status"] == "ok"
    return items[-1]


async def _gateway_prices(org, token_price_id: int) -> None:
    """Wait for the gateway's cached target to carry the new price (the serving epoch's bound, not a TTL)."""
    deadline = time.monotonic() + 5
    while True:
        target = await lookups.target_for(MODEL, lookups.org_info(org))
        if target.price_at(time.time()).token_price_id == token_price_id:
            return
        assert time.monotonic() < deadline, "the gateway did not pick up the new price"
        await asyncio.sleep(0.05)


async def _records(summaries: list[dict]) -> list[UsageRecord]:
    deadline = time.monotonic() + 5
    while sredis().xlen(ingestion.stream_key()) < len(summaries):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await sync_to_async(ingestion.ingest_all)()
    get = sync_to_async(lambda pk: UsageRecord.objects.get(pk=pk))
    return [await get(s["request_id"]) for s in summaries]


def _charges(records: list[UsageRecord]) -> list[UsageCharge]:
    services.usage_charge_pending()
    return [UsageCharge.objects.select_related("token_price").get(usage_record=r) for r in records]


@pytest.mark.asyncio
async def test_after_a_price_change_playground_record_and_ledger_agree(org, alice, public_model, admin_user):
    before = await _answer(org, alice, SHORT)  # the gateway caches the first price
    price = await sync_to_async(services.token_price_create)(
        catalog_model=public_model.catalog_model,
        input_per_1k=Decimal("0.003"),
        output_per_1k=Decimal("0.009"),
        cached_input_per_1k=Decimal("0.0007"),
        long_context_threshold=200,
        long_input_per_1k=Decimal("0.0061"),
        long_output_per_1k=Decimal("0.0187"),
        actor=admin_user,
    )
    await _gateway_prices(org, price.pk)
    summaries = [before] + [await _answer(org, alice, body) for body in (SHORT, LONG, LONG)]
    records = await _records(summaries)
    shown = [Decimal(s["cost"]) for s in summaries]
    assert [r.cost for r in records] == shown  # as the gateway wrote them, before billing saw them
    charges = await sync_to_async(_charges)(records)
    assert [c.amount for c in charges] == shown
    assert [c.token_price_id == price.pk for c in charges] == [False, True, True, True]
    short, long, cached = records[1:]
    assert short.prompt_tokens <= 200 < long.prompt_tokens and cached.cached_tokens > 0  # every tier was used
    for record in (short, long, cached):
        expected = token_amount(
            price,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            cached_tokens=record.cached_tokens,
        )
        assert record.cost == expected
    assert long.cost != cached.cost


@pytest.mark.asyncio
async def test_a_request_costing_half_a_micro_unit_shows_and_is_charged_0_000001(org, alice, public_model):
    # 5 completion tokens × 0.0001 per 1K = 0.0000005: half up at 6 places, as core.money rounds every charge
    price = await sync_to_async(services.token_price_create)(
        catalog_model=public_model.catalog_model, input_per_1k=Decimal("0"), output_per_1k=Decimal("0.0001")
    )
    await _gateway_prices(org, price.pk)
    summary = await _answer(org, alice, SHORT)
    assert summary["usage"]["completion_tokens"] == 5 and summary["cost"] == "0.000001"
    [record] = await _records([summary])
    assert record.cost == Decimal("0.000001")
    [charge] = await sync_to_async(_charges)([record])
    assert charge.amount == Decimal("0.000001")


def test_a_price_scheduled_ahead_applies_from_its_start_without_a_refresh(public_model):
    from billing.models import TokenPrice

    model = public_model.catalog_model
    start = timezone.now() + timedelta(hours=1)
    later = services.token_price_create(
        catalog_model=model, input_per_1k=Decimal("0.004"), output_per_1k=Decimal("0.008"), valid_from=start
    )
    rows = TokenPrice.objects.count()
    target = lookups._load_target(MODEL, None, None)  # what the gateway caches
    assert TokenPrice.objects.count() == rows  # reading prices writes none
    now = time.time()
    assert target.price_at(now).input_per_1k == model.input_price_per_1k
    assert target.price_at(start.timestamp()).token_price_id == later.pk
