"""Rate limits across workers, budgets under concurrency, aborts, retries and the circuit breaker, metering."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import httpx
import openai
import orjson
import pytest

from gateway import admission
from gateway.store import sredis
from metering import ingestion
from metering.models import UsageRecord
from simulator import run_simulator
from tenancy.models import ApiKey
from tenancy.services import apikey_create
from tests.factories import ReplicaFactory

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = [{"role": "user", "content": "Tell me about TCP."}]


def _not_at_a_minute_boundary():
    if time.time() % 60 > 50:  # rate windows are per minute: do not straddle two
        time.sleep(60 - time.time() % 60 + 0.2)


def _wait_for_stream(count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while sredis().xlen(ingestion.stream_key()) < count:
        assert time.monotonic() < deadline, "usage records were not queued"
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def _empty_usage_stream():
    sredis().delete(ingestion.stream_key())
    yield


def test_requests_per_minute_hold_across_two_server_processes(v1, org, public_model, run_gateway):
    _not_at_a_minute_boundary()
    _key, raw = apikey_create(org=org, name="limited", rpm_limit=4)
    with run_gateway() as second:
        clients = [
            openai.OpenAI(base_url=v1, api_key=raw, max_retries=0),
            openai.OpenAI(base_url=second + "/v1", api_key=raw, max_retries=0),
        ]
        for i in range(4):
            response = clients[i % 2].chat.completions.with_raw_response.create(
                model="public/tiny-chat", messages=CHAT, max_tokens=2
            )
            assert response.headers["x-ratelimit-remaining-requests"] == str(3 - i)
        with pytest.raises(openai.RateLimitError) as caught:
            clients[1].chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=2)
    headers = caught.value.response.headers
    assert caught.value.body["code"] == "rate_limit_exceeded" and caught.value.body["type"] == "requests"
    assert 1 <= int(headers["retry-after"]) <= 60 and headers["x-ratelimit-remaining-requests"] == "0"


def test_tokens_per_minute_count_max_tokens_up_front(v1, org, public_model):
    _not_at_a_minute_boundary()
    _key, raw = apikey_create(org=org, name="tpm", tpm_limit=60)
    client = openai.OpenAI(base_url=v1, api_key=raw, max_retries=0)
    client.chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=40)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=40)
    assert caught.value.body["type"] == "tokens"


def test_fifty_parallel_requests_never_overspend_a_small_balance(v1, org, api_key, public_model):
    balance = Decimal("0.005")
    admission.publish_balance(org.pk, balance)

    async def run():
        client = openai.AsyncOpenAI(base_url=v1, api_key=api_key, max_retries=0)

        async def one(i):
            try:
                await client.chat.completions.create(
                    model="public/tiny-chat",
                    messages=[{"role": "user", "content": f"question {i}"}],
                    max_tokens=100,
                    extra_body={"ignore_eos": True},
                )
                return "ok"
            except openai.RateLimitError as exc:
                return exc.body["code"]

        results = await asyncio.gather(*(one(i) for i in range(50)))
        await client.close()
        return results

    results = asyncio.run(run())
    admitted = results.count("ok")
    assert admitted >= 1 and results.count("insufficient_quota") == 50 - admitted
    _wait_for_stream(50)
    ingestion.ingest_all()
    spent = sum(r.cost for r in UsageRecord.objects.filter(org=org, status="ok"))
    assert spent <= balance
    assert admission.open_holds(org.pk) == 0
    assert admission.published_balance(org.pk) == balance - spent >= 0
    with pytest.raises(openai.RateLimitError) as caught:  # what is left cannot cover another worst case
        openai.OpenAI(base_url=v1, api_key=api_key, max_retries=0).chat.completions.create(
            model="public/tiny-chat", messages=CHAT, max_tokens=100
        )
    assert caught.value.body["code"] == "insufficient_quota"


def test_an_org_without_balance_gets_insufficient_quota_even_on_dedicated_services(v1, org, api_key, org_service):
    admission.publish_balance(org.pk, Decimal("0"))
    with pytest.raises(openai.RateLimitError) as caught:
        openai.OpenAI(base_url=v1, api_key=api_key, max_retries=0).chat.completions.create(
            model="acme/my-llama", messages=CHAT, max_tokens=2
        )
    assert caught.value.body["type"] == "insufficient_quota"


def test_key_spend_cap_stops_the_key_not_the_org(v1, org, public_model):
    admission.publish_balance(org.pk, Decimal("100"))
    _key, capped = apikey_create(org=org, name="capped", spend_cap=Decimal("0.001"), spend_cap_period="daily")
    client = openai.OpenAI(base_url=v1, api_key=capped, max_retries=0)
    client.chat.completions.create(
        model="public/tiny-chat", messages=CHAT, max_tokens=100, extra_body={"ignore_eos": True}
    )
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=100)
    assert caught.value.body["code"] == "insufficient_quota" and "spend cap" in caught.value.body["message"]
    _key, other = apikey_create(org=org, name="uncapped")
    assert (
        openai.OpenAI(base_url=v1, api_key=other)
        .chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=2)
        .choices
    )


def test_client_disconnect_aborts_upstream_and_meters_streamed_tokens(
    any_v1, org, api_key, public_org, make_catalog_model, make_service
):
    with run_simulator(served_model_names=("public/slow",), ttft_ms=2, itl_ms=40) as slow:
        make_service(org=public_org, model=make_catalog_model("slow-chat"), name="slow", replicas=[slow])
        body = {"model": "public/slow-chat", "messages": CHAT, "max_tokens": 200, "stream": True, "ignore_eos": True}
        received = 0
        with httpx.stream(
            "POST", any_v1 + "/chat/completions", json=body, timeout=10, headers={"Authorization": f"Bearer {api_key}"}
        ) as response:
            request_id = response.headers["x-request-id"]
            for line in response.iter_lines():
                if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                    received += 1
                    if received == 5:
                        break
        deadline = time.monotonic() + 5
        while httpx.get(slow + "/_sim/stats").json()["requests_aborted"] != 1:
            assert time.monotonic() < deadline, "the upstream request was not aborted"
            time.sleep(0.05)
    _wait_for_stream(1)
    ingestion.ingest_all()
    record = UsageRecord.objects.get(pk=request_id)
    assert record.status == "aborted" and record.stream
    assert 5 <= record.completion_tokens < 200 and record.prompt_tokens > 0
    assert record.cost > 0


def test_failing_replicas_are_retried_and_ejected_then_probed_back(
    any_v1, api_key, public_org, free_port, make_catalog_model, make_service
):
    dead = f"http://127.0.0.1:{free_port()}"
    with (
        run_simulator(served_model_names=("public/flaky",), ttft_ms=1, itl_ms=1) as good,
        run_simulator(served_model_names=("public/flaky",), ttft_ms=1, itl_ms=1, failure_rate=1.0) as bad,
    ):
        make_service(org=public_org, model=make_catalog_model("flaky-chat"), name="flaky", replicas=[bad, dead, good])
        client = openai.OpenAI(base_url=any_v1, api_key=api_key, max_retries=0)
        for i in range(12):
            answer = client.chat.completions.create(
                model="public/flaky-chat", messages=[{"role": "user", "content": f"q{i} " * 3}], max_tokens=2
            )
            assert answer.choices
        failed = httpx.get(bad + "/_sim/stats").json()["requests_total"]
        assert 1 <= failed <= 3  # ejected after GATEWAY_BREAKER_FAILURES consecutive failures
        assert httpx.get(good + "/_sim/stats").json()["requests_completed"] == 12
        httpx.post(bad + "/_sim/config", json={"failure_rate": 0.0})
        time.sleep(1.2)  # the breaker cooldown in tests
        for i in range(20):
            client.chat.completions.create(
                model="public/flaky-chat", messages=[{"role": "user", "content": f"again {i} " * 3}], max_tokens=2
            )
        assert httpx.get(bad + "/_sim/stats").json()["requests_completed"] >= 1  # probed back into rotation


def test_no_ready_replica_is_503_with_retry_after(v1, api_key, public_org, make_catalog_model, make_service):
    make_service(org=public_org, model=make_catalog_model("cold-chat"), name="cold", replicas=[])
    with pytest.raises(openai.InternalServerError) as caught:
        openai.OpenAI(base_url=v1, api_key=api_key, max_retries=0).chat.completions.create(
            model="public/cold-chat", messages=CHAT
        )
    assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"]
    assert caught.value.body["code"] == "no_ready_replica"


@pytest.mark.parametrize("status", ["Pending", "Creating", "Starting", "Running", "Scaling"])
def test_a_public_model_warming_up_is_503_with_retry_after_not_404(
    any_v1, api_key, public_org, make_catalog_model, make_service, status
):
    """After a restart a public service is Starting (or Running with no replica ready yet): retry, it exists."""
    service = make_service(
        org=public_org, model=make_catalog_model("warm-chat"), name="warm", replicas=[], status=status
    )
    ReplicaFactory(service=service, ready=False)
    client = openai.OpenAI(base_url=any_v1, api_key=api_key, max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="public/warm-chat", messages=CHAT, max_tokens=2)
    assert caught.value.status_code == 503 and int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.body["code"] == "no_ready_replica" and caught.value.body["type"] == "server_error"
    assert admission.open_holds(str(service.org_id)) == 0


@pytest.mark.parametrize("status", ["Stopped", "Failed", "Deleted"])
def test_a_public_model_no_longer_offered_is_404(any_v1, api_key, public_org, make_catalog_model, make_service, status):
    make_service(org=public_org, model=make_catalog_model("gone-chat"), name="gone", replicas=[], status=status)
    with pytest.raises(openai.NotFoundError) as caught:
        openai.OpenAI(base_url=any_v1, api_key=api_key, max_retries=0).chat.completions.create(
            model="public/gone-chat", messages=CHAT, max_tokens=2
        )
    assert caught.value.body["code"] == "model_not_found"


def test_usage_is_recorded_once_even_when_entries_are_replayed_or_a_consumer_dies(v1, org, key_row, public_model):
    client = openai.OpenAI(base_url=v1, api_key=key_row.raw)
    for i in range(3):
        client.chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=4, temperature=0.5, seed=i)
    _wait_for_stream(3)
    r = sredis()
    entries = r.xrange(ingestion.stream_key())
    # A consumer reads everything and dies before acknowledging.
    ingestion.ensure_group(r)
    r.xreadgroup(ingestion.GROUP, "doomed", {ingestion.stream_key(): ">"}, count=100)
    assert ingestion.ingest_batch(consumer="survivor") == 0  # nothing new, and the dead one's entries are not idle yet
    assert ingestion.ingest_batch(consumer="survivor", claim_idle_ms=0) == 3
    assert UsageRecord.objects.filter(org=org).count() == 3
    for _id, fields in entries:  # replay every entry
        r.xadd(ingestion.stream_key(), fields)
    assert ingestion.ingest_all() == 3
    assert UsageRecord.objects.filter(org=org).count() == 3
    record = UsageRecord.objects.filter(org=org).order_by("started_at").first()
    assert record.api_key_id == key_row.pk and record.model_id == "public/tiny-chat" and record.public
    assert record.replica == "qwen-small-0" and record.prompt_tokens > 0 and 0 < record.completion_tokens <= 4
    assert record.params == {"max_tokens": 4, "temperature": 0.5, "seed": 0} and len(record.prompt_hash) == 64
    assert record.served_model_version and record.ttft_ms is not None and record.status == "ok"
    assert (
        record.cost
        == (Decimal(record.prompt_tokens) * Decimal("0.002") + Decimal(record.completion_tokens) * Decimal("0.006"))
        / 1000
    )
    assert ApiKey.objects.get(pk=key_row.pk).last_used_at is not None
    payload = orjson.loads(entries[0][1][b"r"])
    assert payload["id"] == str(UsageRecord.objects.get(pk=payload["id"]).pk)


def test_a_request_with_nul_in_a_field_is_stored_and_never_holds_up_the_others(v1, org, key_row, public_model):
    client = openai.OpenAI(base_url=v1, api_key=key_row.raw)
    client.chat.completions.create(
        model="public/tiny-chat", messages=CHAT, max_tokens=2, stop=["\x00"], extra_body={"echo": "\u0000"}
    )
    client.chat.completions.create(model="public/tiny-chat", messages=CHAT, max_tokens=2)
    _wait_for_stream(2)
    assert ingestion.ingest_all() == 2
    poisoned = UsageRecord.objects.get(org=org, params__has_key="echo")
    assert poisoned.params == {"max_tokens": 2, "stop": ["\ufffd"], "echo": "\ufffd"}
    assert UsageRecord.objects.filter(org=org).count() == 2 and sredis().xlen(ingestion.stream_key()) == 0


def test_a_slow_reader_gets_every_byte_of_a_long_stream_in_order(
    any_v1, org, api_key, public_org, make_catalog_model, make_service
):
    """A client that stops reading fills its socket buffer: the relay holds pieces, stops reading from the
    replica, and resumes when the client drains; nothing is lost, reordered or doubled."""
    import socket
    from urllib.parse import urlsplit

    tokens = 24000  # ~5.5 MB of events: more than the kernel's socket buffers hold, so uvicorn's buffer fills
    with run_simulator(served_model_names=("public/long",), ttft_ms=1, itl_ms=0) as long:
        service = make_service(org=public_org, model=make_catalog_model("long-chat"), name="long", replicas=[long])
        service.max_model_len = 32768
        service.save()
        body = orjson.dumps(
            {"model": "public/long-chat", "messages": CHAT, "max_tokens": tokens, "stream": True, "ignore_eos": True}
        )
        parts = urlsplit(any_v1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((parts.hostname, parts.port))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer "
            + api_key.encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        time.sleep(3)  # the whole answer is generated by now; most of it waits on the gateway's side
        # A bytearray: ``bytes +=`` of thousands of small reads copies megabytes each time while holding the
        # GIL, which starved this process's simulator thread past the gateway's idle timeout under load.
        received = bytearray()
        sock.settimeout(20)
        while not received.endswith(b"\r\n0\r\n\r\n"):
            data = sock.recv(65536)
            assert data, "the gateway closed the connection early"
            received += data
        sock.close()
        raw = bytes(received)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    payload = b""
    while True:  # undo the chunked framing: every frame must be well formed
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        payload += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
    events = [e for e in payload.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(e[6:]) for e in events[:-1]]
    content = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert sum(1 for text in content if text) == tokens
    assert all(c["model"] == "public/long-chat" for c in chunks)
    assert not any(c.get("usage") for c in chunks)  # the client did not ask for usage: removed
