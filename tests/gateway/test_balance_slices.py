"""Balance slices: a worker admits requests from a part of the org's balance held in Redis for it, with no round
trip before the upstream call, and the money still adds up to the micro-unit."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import openai
import pytest
from asgiref.sync import sync_to_async

from billing.pricing import TokenRates, token_worst_case
from gateway import admission
from gateway.errors import GatewayError
from gateway.store import k, sredis
from metering import ingestion
from metering.models import UsageRecord

PRICE = TokenRates(currency="CNY", input_per_1k=Decimal("0.002"), output_per_1k=Decimal("0.006"))
WORST = (20, 100)  # prompt estimate, max_tokens: 0.00064 worst case


def _holds(org_id) -> dict[str, int]:
    return {name.decode(): int(value) for name, value in sredis().hgetall(k("holds", org_id)).items()}


def _held(org_id) -> int:
    return int(sredis().get(k("held", org_id)) or 0)


def _balance(org_id) -> int:
    return int(sredis().get(k("bal", org_id)))


async def _admit(org_id, n: int):
    return await admission.admit(
        request_id=f"r{n}-{time.monotonic_ns()}", org_id=org_id, est_tokens=120, price=PRICE, reserve_tokens=WORST
    )


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_slice_admits_without_a_hold_per_request_and_settles_to_the_micro_unit(org):
    await sync_to_async(admission.publish_balance)(org.pk, Decimal("10"))
    worst = admission.to_micro(token_worst_case(PRICE, prompt_tokens=WORST[0], completion_tokens=WORST[1]))
    first = await _admit(org.pk, 1)  # reserved in Redis; the worker is granted a slice
    assert first.slice is None and first.reserved_micro == worst == 640
    holds = _holds(org.pk)
    slice_ids = [name for name in holds if name.startswith("slice:")]
    assert len(slice_ids) == 1 and holds[first.request_id] == worst
    granted = holds[slice_ids[0]]
    assert granted == (10_000_000 - worst) // 16  # 1/16 of what was available after the request's own hold

    second, third = await _admit(org.pk, 2), await _admit(org.pk, 3)
    assert second.slice is not None and third.slice is second.slice
    assert _holds(org.pk) == holds and _held(org.pk) == worst + granted  # nothing asked of Redis

    await admission.settle(second, actual_tokens=80, actual_cost=Decimal("0.000333"))
    await admission.release(third)  # never reached a model: the slice gets its reservation back, Redis is not asked
    await admission.settle(first, actual_tokens=90, actual_cost=Decimal("0.0004"))
    assert _balance(org.pk) == 10_000_000 - 333 - 400
    assert _holds(org.pk) == {slice_ids[0]: granted - 333} and _held(org.pk) == granted - 333
    assert second.slice.remaining == granted - 333 and second.slice.outstanding == 0

    await admission.give_back_slices()
    assert _holds(org.pk) == {} and _held(org.pk) == 0 and _balance(org.pk) == 10_000_000 - 733


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_balance_billing_lowers_stops_slice_admissions_within_a_second(org):
    await sync_to_async(admission.publish_balance)(org.pk, Decimal("10"))
    first = await _admit(org.pk, 1)
    open_request = await _admit(org.pk, 2)
    assert open_request.slice is not None
    await sync_to_async(admission.publish_balance)(org.pk, Decimal("0.001"))  # a charge from elsewhere: below the holds
    await asyncio.sleep(admission.SLICE_MAX_AGE_SECONDS + 0.25)
    with pytest.raises(GatewayError) as caught:
        await _admit(org.pk, 3)
    assert caught.value.code == "insufficient_quota"
    # The slice was given back but for the open request's reservation, which its settlement then drops.
    assert _holds(org.pk)[open_request.slice.id] == open_request.reserved_micro
    await admission.settle(open_request, actual_tokens=100, actual_cost=Decimal("0.0005"))
    await admission.settle(first, actual_tokens=100, actual_cost=Decimal("0.0005"))
    assert _holds(org.pk) == {} and _held(org.pk) == 0 and _balance(org.pk) == 1000 - 500 - 500


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_small_balance_gets_no_slice_and_idle_slices_are_given_back(org, other_org, monkeypatch):
    await sync_to_async(admission.publish_balance)(org.pk, Decimal("0.01"))  # less than 16 x 4 worst cases
    for n in range(3):
        admitted = await _admit(org.pk, n)
        assert admitted.slice is None
        await admission.settle(admitted, actual_tokens=10, actual_cost=Decimal("0.0001"))
    assert _holds(org.pk) == {} and _balance(org.pk) == 10_000 - 300

    monkeypatch.setattr(admission, "SLICE_IDLE_SECONDS", 0.3)
    await sync_to_async(admission.publish_balance)(other_org.pk, Decimal("10"))
    admitted = await _admit(other_org.pk, 1)
    await admission.settle(admitted, actual_tokens=10, actual_cost=Decimal("0.0001"))
    assert _held(other_org.pk) > 0  # the slice
    deadline = time.monotonic() + 3
    while _held(other_org.pk) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _holds(other_org.pk) == {} and _held(other_org.pk) == 0 and _balance(other_org.pk) == 10_000_000 - 100


@pytest.mark.django_db(transaction=True)
def test_parallel_requests_through_two_workers_never_overspend_a_balance_split_into_slices(
    v1, org, api_key, public_model, run_gateway
):
    sredis().delete(ingestion.stream_key())
    balance = Decimal("0.05")  # about 80 worst cases: the first admissions are granted slices, later ones are not
    admission.publish_balance(org.pk, balance)
    with run_gateway() as second:

        async def run():
            clients = [
                openai.AsyncOpenAI(base_url=v1, api_key=api_key, max_retries=0),
                openai.AsyncOpenAI(base_url=second + "/v1", api_key=api_key, max_retries=0),
            ]

            async def one(i):
                try:
                    await clients[i % 2].chat.completions.create(
                        model="public/tiny-chat",
                        messages=[{"role": "user", "content": f"question {i}"}],
                        max_tokens=100,
                        extra_body={"ignore_eos": True},
                    )
                    return "ok"
                except openai.RateLimitError as exc:
                    return exc.body["code"]

            results = []
            for _wave in range(3):
                results += await asyncio.gather(*(one(i) for i in range(60)))
            for client in clients:
                await client.close()
            return results

        results = asyncio.run(run())
        slices_seen = [name for name in _holds(org.pk) if name.startswith("slice:")]
    admitted = results.count("ok")
    assert admitted >= 40 and results.count("insufficient_quota") == len(results) - admitted
    assert slices_seen  # the workers did admit from slices
    deadline = time.monotonic() + 5
    while sredis().xlen(ingestion.stream_key()) < len(results) and time.monotonic() < deadline:
        time.sleep(0.02)
    ingestion.ingest_all()
    spent = sum(r.cost for r in UsageRecord.objects.filter(org=org, status="ok"))
    assert UsageRecord.objects.filter(org=org, status="ok").count() == admitted
    assert 0 < spent <= balance
    assert admission.published_balance(org.pk) == balance - spent
    # What is still held is only the session worker's slice (the second worker gave its back when it stopped).
    holds = _holds(org.pk)
    assert all(name.startswith("slice:") for name in holds) and sum(holds.values()) == _held(org.pk) <= (
        admission.to_micro(balance - spent)
    )
