"""A request's life cycle ends exactly once: the replica's health, its in-flight count, the settlement and the usage
record are written once for a stream that completes and for one whose client goes away, through the ASGI edge and
through the playground's ``chat_stream``, on both GATEWAY_TRANSPORT paths."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
import pytest
import pytest_asyncio

from gateway import admission, asgi
from gateway.core import chat_stream
from gateway.router import router
from gateway.store import sredis
from metering import ingestion
from simulator import run_simulator

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

CHAT = [{"role": "user", "content": "Tell me about QUIC."}]


@pytest.fixture
def ledger(monkeypatch):
    """What the gateway wrote about replicas and usage: a count per router call and per settlement."""
    seen: Counter[str] = Counter()
    for name in ("started", "finished", "succeeded", "failed"):
        original = getattr(router, name)

        def counted(endpoint, _name=name, _original=original):
            seen[_name] += 1
            _original(endpoint)

        monkeypatch.setattr(router, name, counted)
    settle = admission.settle_and_record

    async def counted_settle(*args, **kwargs):
        seen["settled"] += 1
        await settle(*args, **kwargs)

    monkeypatch.setattr(admission, "settle_and_record", counted_settle)
    return seen


@pytest_asyncio.fixture(autouse=True)
async def _fresh_stream_and_sessions():
    from gateway.transport import close_upstream_sessions

    sredis().delete(ingestion.stream_key())
    yield
    await close_upstream_sessions()


@pytest.fixture
def slow_model(public_org, make_catalog_model, make_service):
    with run_simulator(served_model_names=("public/slow",), ttft_ms=2, itl_ms=20) as url:
        make_service(org=public_org, model=make_catalog_model("slow-chat"), name="slow", replicas=[url])
        yield "public/slow-chat"


async def _usage_entries(expected: int) -> list[dict]:
    """The usage stream's entries, once ``expected`` arrived and no more follow within a moment."""
    deadline = time.monotonic() + 5
    while sredis().xlen(ingestion.stream_key()) < expected:
        assert time.monotonic() < deadline, "the usage record was never written"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    return [orjson.loads(fields[b"r"]) for _id, fields in sredis().xrange(ingestion.stream_key())]


async def _through_the_edge(api_key: str, model: str, *, leave_after: int | None) -> list[dict]:
    """POST a stream to the ASGI edge in-process; the client goes away after ``leave_after`` body parts."""
    body = orjson.dumps({"model": model, "messages": CHAT, "max_tokens": 40, "stream": True, "ignore_eos": True})
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", f"Bearer {api_key}".encode()), (b"content-length", str(len(body)).encode())],
    }
    gone = asyncio.Event()
    sent: list[dict] = []
    requests = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if requests:
            return requests.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        parts = sum(1 for m in sent if m["type"] == "http.response.body")
        if leave_after is not None and parts >= leave_after:
            gone.set()
            await asyncio.sleep(1)  # a client that is gone does not drain: the disconnect cancels this

    await asyncio.ensure_future(asgi.handle(scope, receive, send))  # its own task, as a server runs it
    return sent


@pytest.mark.parametrize("leave_after", [None, 3], ids=["completes", "client-leaves"])
async def test_the_edge_finishes_a_stream_once(transport, leave_after, ledger, org, api_key, slow_model):
    sent = await _through_the_edge(api_key, slow_model, leave_after=leave_after)
    (record,) = await _usage_entries(1)
    assert ledger["started"] == ledger["finished"] == ledger["settled"] == 1
    if leave_after is None:
        assert b"data: [DONE]" in sent[-1]["body"] and not sent[-1].get("more_body")
        assert (record["status"], record["http_status"]) == ("ok", 200) and record["completion_tokens"] == 40
        assert (ledger["succeeded"], ledger["failed"]) == (1, 0)
    else:
        assert (record["status"], record["http_status"]) == ("aborted", 499) and record["completion_tokens"] < 40
        assert (ledger["succeeded"], ledger["failed"]) == (0, 0)  # a client leaving says nothing of the replica
    assert all(state.outstanding == 0 for state in router.states.values())


@pytest.mark.parametrize("leave_after", [None, 3], ids=["completes", "client-leaves"])
async def test_the_playground_finishes_a_stream_once(transport, leave_after, ledger, org, slow_model):
    items = []
    stream = chat_stream(org=org, model_id=slow_model, body={"messages": CHAT, "max_tokens": 40, "ignore_eos": True})
    async for item in stream:
        items.append(item)
        if len(items) == leave_after:
            break
    await stream.aclose()
    (record,) = await _usage_entries(1)
    assert ledger["started"] == ledger["finished"] == ledger["settled"] == 1
    if leave_after is None:
        assert items[-1]["type"] == "summary" and items[-1]["status"] == "ok" and record["status"] == "ok"
        assert (ledger["succeeded"], ledger["failed"]) == (1, 0)
    else:
        assert (record["status"], record["http_status"]) == ("aborted", 499)
        assert (ledger["succeeded"], ledger["failed"]) == (0, 0)
    assert all(state.outstanding == 0 for state in router.states.values())
