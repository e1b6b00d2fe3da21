"""A gateway worker killed mid-stream (SIGKILL): the sweeper bills what its streams relayed and releases their
reservation; a request that settled normally is never swept, nor is one a living worker still serves."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from decimal import Decimal

import httpx
import pytest

from billing.models import LedgerEntry, UsageCharge
from billing.services import usage_charge_pending
from gateway import admission
from metering import open_requests
from metering.ingestion import ingest_all, stream_key
from metering.models import UsageRecord
from simulator import run_simulator
from tests.gateway.conftest import gateway_server

pytestmark = pytest.mark.django_db(transaction=True)

STEP = 8  # GATEWAY_PROGRESS_TOKENS of the killed gateway
CUT_AFTER = 20  # content tokens each stream has delivered when the worker is killed
BALANCE = Decimal("50")
MODEL = "public/crash-chat"


def _content_tokens(event: str) -> int:
    if not event.startswith("data: {"):
        return 0
    data = json.loads(event[6:])
    return sum(1 for choice in data.get("choices") or [] if (choice.get("delta") or {}).get("content"))


class _Stream(threading.Thread):
    """One streamed chat completion read event by event; ``tokens`` counts the content tokens received."""

    def __init__(self, v1: str, key: str, started: threading.Barrier, max_tokens: int):
        super().__init__(daemon=True)
        self.v1, self.key, self.started, self.max_tokens = v1, key, started, max_tokens
        self.tokens = 0
        self.request_id = ""
        self.done = False

    def run(self) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "tell"}], "max_tokens": self.max_tokens}
        body["ignore_eos"] = True  # the simulator answers exactly max_tokens
        headers = {"Authorization": f"Bearer {self.key}"}
        try:
            with httpx.stream(
                "POST", self.v1 + "/chat/completions", json={**body, "stream": True}, headers=headers, timeout=30
            ) as response:
                self.request_id = response.headers["x-request-id"]
                buffer = ""
                for text in response.iter_text():
                    buffer += text
                    *events, buffer = buffer.split("\n\n")
                    for event in events:
                        before = self.tokens
                        self.tokens += _content_tokens(event)
                        if before < CUT_AFTER <= self.tokens:
                            self.started.wait(30)
                        self.done = self.done or event.startswith("data: [DONE]")
        except httpx.HTTPError:
            pass  # the worker died: the connection ends without the rest
        finally:
            if self.tokens < CUT_AFTER:
                self.started.abort()


@pytest.mark.parametrize(
    ("path", "slice_fraction"),
    [("fast", "16"), ("plain", "0")],
    ids=["fast-balance-slices", "plain-reserved-in-redis"],
)
def test_streams_of_a_killed_worker_are_billed_and_their_reservation_released(
    path, slice_fraction, settings, org, api_key, public_org, make_catalog_model, make_service
):
    settings.USAGE_OPEN_GRACE_SECONDS = 1
    admission.publish_balance(org.pk, BALANCE)
    with run_simulator(served_model_names=("public/crash-small",), ttft_ms=2, itl_ms=25) as replica:
        make_service(org=public_org, model=make_catalog_model("crash-chat"), name="crash-small", replicas=[replica])
        env = {
            "GATEWAY_TRANSPORT": path,
            "GATEWAY_BALANCE_SLICE_FRACTION": slice_fraction,
            "GATEWAY_PROGRESS_TOKENS": str(STEP),
            "USAGE_OPEN_GRACE_SECONDS": "1",
        }
        with gateway_server(with_process=True, **env) as (url, process), gateway_server(**env) as living_url:
            v1 = url + "/v1"
            headers = {"Authorization": f"Bearer {api_key}"}
            # Requests that end normally first (one of them takes the balance slice the streams then use).
            finished = [
                httpx.post(
                    v1 + "/chat/completions",
                    json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, **extra},
                    headers=headers,
                    timeout=30,
                )
                for extra in ({}, {"stream": True})
            ]
            assert [r.status_code for r in finished] == [200, 200]
            assert finished[1].text.rstrip().endswith("data: [DONE]")
            finished_ids = [r.headers["x-request-id"] for r in finished]

            # A stream that a living worker serves while the sweeper runs: not swept.
            living_started = threading.Barrier(2)
            living = _Stream(living_url + "/v1", api_key, living_started, max_tokens=400)
            started = threading.Barrier(4)
            streams = [_Stream(v1, api_key, started, max_tokens=100) for _ in range(3)]
            for stream in [living, *streams]:
                stream.start()
            started.wait(30)  # every stream delivered CUT_AFTER tokens and is still running
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            for stream in streams:
                stream.join(30)
            living_started.wait(30)

            assert all(not s.done and s.request_id for s in streams)
            ingest_all()
            assert UsageRecord.objects.filter(id__in=finished_ids).count() == 2
            assert not UsageRecord.objects.filter(id__in=[s.request_id for s in streams]).exists()

            time.sleep(1.5)  # the killed worker's heartbeat is older than the grace; the living one beats on
            assert not living.done
            assert open_requests.open_requests_sweep() == 3
            assert open_requests.open_requests_sweep() == 0  # once
            living.join(30)
            assert living.done  # the living worker's stream was not cut, and settles itself

    ingest_all()
    records = {str(r.id): r for r in UsageRecord.objects.filter(id__in=[s.request_id for s in streams])}
    assert len(records) == 3
    for stream in streams:
        record = records[stream.request_id]
        assert (record.status, record.error_code, record.stream) == ("aborted", "gateway_worker_lost", True)
        # at least what the client received, at most the marker interval more
        assert stream.tokens <= record.completion_tokens <= stream.tokens + STEP, (stream.tokens, record)
        assert record.prompt_tokens > 0 and record.cost > 0
    for request_id in finished_ids:  # settled normally by the killed worker before it died, recorded once, not swept
        assert UsageRecord.objects.get(id=request_id).status == "ok"
    living_record = UsageRecord.objects.get(id=living.request_id)
    assert (living_record.status, living_record.completion_tokens) == ("ok", 400)

    # The reservations are released: nothing held; the balance the gateway holds paid exactly what was recorded.
    assert admission.open_holds(org.pk) == 0
    all_costs = sum(UsageRecord.objects.filter(org=org).values_list("cost", flat=True), Decimal(0))
    assert admission.published_balance(org.pk) == BALANCE - all_costs

    costs = {request_id: record.cost for request_id, record in records.items()}
    usage_charge_pending()
    for request_id, cost in costs.items():
        charge = UsageCharge.objects.get(usage_record_id=request_id)
        assert charge.amount == cost == UsageRecord.objects.get(id=request_id).cost
    charged = sum(UsageCharge.objects.filter(org=org).values_list("amount", flat=True), Decimal(0))
    assert -sum(LedgerEntry.objects.filter(org=org).values_list("amount", flat=True), Decimal(0)) == charged


def _marker(request_id: str, org_id) -> dict:
    return {
        "id": request_id,
        "org_id": str(org_id),
        "api_key_id": None,
        "user_id": None,
        "source": "api",
        "endpoint": "chat.completions",
        "model_id": MODEL,
        "catalog_model_id": None,
        "service_id": None,
        "public": True,
        "stream": True,
        "started_at": time.time(),
        "prompt_tokens": 20,
        "currency": "CNY",
    }


def _entry(request_id: str) -> bytes:
    return json.dumps({"id": request_id, "status": "ok"}).encode()


def _entries(request_id: str) -> list[dict]:
    from gateway.store import sredis

    found = [json.loads(fields[b"r"]) for _id, fields in sredis().xrange(stream_key())]
    return [entry for entry in found if entry["id"] == request_id]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("slices", [16, 0], ids=["from-a-slice", "reserved-in-redis"])
async def test_a_settlement_after_the_sweep_counts_nothing_twice(org, settings, slices):
    """A request past its deadline is swept while its worker still lives; when that worker settles it later, the
    settlement changes nothing: one usage record, the balance paid once, nothing held."""
    from asgiref.sync import sync_to_async

    from billing.pricing import TokenRates

    settings.GATEWAY_BALANCE_SLICE_FRACTION = slices
    settings.USAGE_OPEN_GRACE_SECONDS = admission.HOLD_SECONDS + 100  # the worker stays alive for the sweeper
    price = TokenRates(currency="CNY", input_per_1k=Decimal("0.002"), output_per_1k=Decimal("0.006"))
    await sync_to_async(admission.publish_balance)(org.pk, Decimal("10"))

    async def admit():
        request_id = str(uuid.uuid4())
        return await admission.admit(
            request_id=request_id,
            org_id=str(org.pk),
            est_tokens=120,
            price=price,
            reserve_tokens=(20, 100),
            marker=_marker(request_id, org.pk),
        )

    first = await admit()  # reserved in Redis (and a slice granted, with slices)
    second = await admit()
    assert (second.slice is not None) == bool(slices)
    progress = {"t": 40, "cost": "0.000280", "r": "replica-1", "ttft": 3, "at": time.time() - 200}
    admission.progress(second, json.dumps(progress).encode())
    await admission.settle_and_record(
        first, actual_tokens=30, actual_cost=Decimal("0.0001"), stream=stream_key(), entry=_entry(first.request_id)
    )
    await asyncio.sleep(0.05)  # the fired progress and the settlement are written

    swept = await sync_to_async(open_requests.open_requests_sweep)(now=time.time() + admission.HOLD_SECONDS + 1)
    assert swept == 1  # the second, past its deadline; the first settled normally
    (entry,) = _entries(second.request_id)
    assert (entry["completion_tokens"], entry["prompt_tokens"], entry["cost"]) == (40, 20, "0.000280")
    assert entry["status"] == "aborted" and entry["replica"] == "replica-1"
    after_sweep = admission.published_balance(org.pk)
    assert after_sweep == Decimal("10") - Decimal("0.0001") - Decimal("0.000280")

    await admission.settle_and_record(
        second, actual_tokens=300, actual_cost=Decimal("0.0015"), stream=stream_key(), entry=_entry(second.request_id)
    )
    await asyncio.sleep(0.05)
    assert len(_entries(second.request_id)) == 1
    assert admission.published_balance(org.pk) == after_sweep
    await admission.give_back_slices()
    assert admission.open_holds(org.pk) == 0
