"""gateway.core.chat_stream, the playground's entry: chunks then a summary, errors before the first chunk, aborts."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async

from gateway import admission
from gateway.core import chat_stream
from gateway.errors import GatewayError
from gateway.store import sredis
from metering import ingestion
from metering.models import UsageRecord
from simulator import run_simulator

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

BODY = {"messages": [{"role": "user", "content": "Tell me about UDP."}], "max_tokens": 12, "ignore_eos": True}


async def _drain_usage(count: int) -> None:
    deadline = time.monotonic() + 5
    while sredis().xlen(ingestion.stream_key()) < count:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await sync_to_async(ingestion.ingest_all)()


@pytest_asyncio.fixture(autouse=True)
async def _fresh_stream_and_session():
    from gateway.transport import close_upstream_sessions

    sredis().delete(ingestion.stream_key())
    yield
    await close_upstream_sessions()  # the session belongs to this test's event loop


async def test_chunks_then_summary_metered_as_playground(transport, org, alice, public_model):
    items = [item async for item in chat_stream(org=org, model_id="public/tiny-chat", body=BODY, user=alice)]
    summary = items[-1]
    chunks = items[:-1]
    assert summary["type"] == "summary" and summary["status"] == "ok"
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "public/tiny-chat" for c in chunks)
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == 12
    assert summary["usage"]["completion_tokens"] == 12 and summary["replica"] == "qwen-small-0"
    assert Decimal(summary["cost"]) > 0 and summary["currency"] == "CNY" and summary["ttft_ms"] is not None
    await _drain_usage(1)
    record = await sync_to_async(UsageRecord.objects.get)(pk=summary["request_id"])
    assert record.source == "playground" and record.user_id == alice.pk and record.completion_tokens == 12
    assert str(record.cost) == summary["cost"]


async def test_errors_come_before_the_first_chunk(transport, org, other_org, public_model, org_service):
    with pytest.raises(GatewayError) as caught:
        [x async for x in chat_stream(org=other_org, model_id="acme/my-llama", body=BODY)]
    assert caught.value.status == 404
    await sync_to_async(admission.publish_balance)(org.pk, Decimal("0"))
    with pytest.raises(GatewayError) as caught:
        [x async for x in chat_stream(org=org, model_id="public/tiny-chat", body=BODY)]
    assert (caught.value.status, caught.value.code) == (429, "insufficient_quota")
    with pytest.raises(GatewayError) as caught:
        [x async for x in chat_stream(org=org, model_id="public/tiny-chat", body={**BODY, "temperature": "hot"})]
    assert (caught.value.status, caught.value.param) == (400, "temperature")


async def test_cancelling_the_consumer_aborts_upstream_and_meters_what_streamed(
    transport, org, public_org, make_catalog_model, make_service
):
    with run_simulator(served_model_names=("public/slow",), ttft_ms=2, itl_ms=30) as slow:
        await sync_to_async(make_service)(
            org=public_org, model=await sync_to_async(make_catalog_model)("slow-chat"), name="slow", replicas=[slow]
        )
        seen = []

        async def consume():
            async for item in chat_stream(org=org, model_id="public/slow-chat", body={**BODY, "max_tokens": 300}):
                seen.append(item)

        task = asyncio.ensure_future(consume())
        while len(seen) < 6:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _drain_usage(1)
        import httpx

        assert httpx.get(slow + "/_sim/stats").json()["requests_aborted"] == 1
    record = await sync_to_async(UsageRecord.objects.get)(org=org)
    assert record.status == "aborted" and 5 <= record.completion_tokens < 300
