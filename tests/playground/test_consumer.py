"""The playground socket against the real ASGI app, the real gateway core and engine simulators as upstream."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import urllib.request
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client

from maas.asgi import application
from metering import ingestion
from metering.models import UsageRecord, UsageSource
from playground.models import AnswerStatus, Conversation, Message
from tests.factories import ReplicaFactory
from tests.playground.conftest import PUBLIC_SLUG

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC_ID = f"public/{PUBLIC_SLUG}"
# Runtimes serve a service under its own id (<org namespace>/<service name>); the gateway maps the client's name.
SERVED_NAMES = ("public/qwen-small", "acme/my-llama")


def in_own_loop(test):
    """Run an async test on a fresh event loop in its own thread.

    A session-wide Playwright (browser tests) leaves a running loop in the main thread, where pytest-asyncio could
    not start one. At the end the consumer's database thread closes its connection so teardown can drop the DB.
    """

    @functools.wraps(test)
    def run(*args, **kwargs):
        async def body():
            try:
                await test(*args, **kwargs)
            finally:
                await sync_to_async(connections.close_all)()

        outcome = {}

        def target():
            try:
                asyncio.run(body())
            except BaseException as exc:  # re-raised in the test's thread
                outcome["error"] = exc

        thread = threading.Thread(target=target)
        thread.start()
        thread.join(120)
        assert not thread.is_alive(), "test did not finish in 120 s"
        if "error" in outcome:
            raise outcome["error"]

    return run


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def _open(user=None, *, origin=b"http://testserver"):
    headers = [(b"host", b"testserver")]
    if origin:
        headers.append((b"origin", origin))
    if user is not None:
        headers.append((b"cookie", await sync_to_async(_session_cookie)(user)))
    communicator = WebsocketCommunicator(application, "/ws/playground/", headers=headers)
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


async def _until(communicator, kind: str, timeout: float = 10) -> list[dict]:
    """Every frame up to and including the first of ``kind``."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] == kind:
            return frames


def _send(model=PUBLIC_ID, content="Tell me about TCP.", **extra) -> dict:
    return {
        "type": "send",
        "conversation": None,
        "model": model,
        "compare_model": "",
        "system": "Be brief.",
        "params": {"temperature": 0.2, "max_tokens": 64},
        "content": content,
        **extra,
    }


@pytest.fixture
def simulator():
    from simulator import run_simulator

    with run_simulator(served_model_names=SERVED_NAMES, ttft_ms=5, itl_ms=2) as base_url:
        yield base_url


@pytest.fixture
def slow_simulator():
    from simulator import run_simulator

    with run_simulator(served_model_names=SERVED_NAMES, ttft_ms=5, itl_ms=60) as base_url:
        yield base_url


@pytest.fixture
def funded(org, alice):
    """Alice's org has credit: public (per-token) models may be called."""
    from billing.services import ledger_adjust

    ledger_adjust(org=org, amount=Decimal("100"), reason="test credit", actor=alice)
    return org


def _with_replica(service, base_url):
    ReplicaFactory(service=service, name=f"{service.name}-0", base_url=base_url)
    return service


@in_own_loop
async def test_visitor_without_session_is_refused():
    _communicator, connected, code = await _open(None)
    assert not connected and code == 4401


@in_own_loop
async def test_foreign_origin_is_refused(alice):
    _communicator, connected, _code = await _open(alice, origin=b"https://evil.example")
    assert not connected


@in_own_loop
async def test_empty_prompt_is_an_error_and_creates_nothing(alice, public_model):
    communicator, connected, _ = await _open(alice)
    assert connected
    await communicator.send_json_to(_send(content="  "))
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["type"] == "error" and frame["field"] == "content"
    assert not await sync_to_async(Conversation.objects.exists)()
    await communicator.disconnect()


@in_own_loop
async def test_someone_elses_conversation_is_not_found(alice, bob, org, public_model):
    from playground import services

    theirs, _ = await sync_to_async(services.conversation_start)(org=org, user=bob, model_id=PUBLIC_ID, content="x")
    communicator, _connected, _ = await _open(alice)
    await communicator.send_json_to(_send(conversation=str(theirs.pk), content="hijack"))
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["type"] == "error" and frame["code"] == "not_found"
    assert await sync_to_async(Message.objects.filter(conversation=theirs).count)() == 1
    await communicator.disconnect()


@in_own_loop
async def test_answer_streams_token_by_token_and_is_recorded_billed_as_playground(
    alice, funded, org, public_model, simulator
):
    await sync_to_async(_with_replica)(public_model, simulator)
    communicator, _connected, _ = await _open(alice)
    await communicator.send_json_to(_send())
    frames = await _until(communicator, "idle")
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "conversation" and kinds[1] == "start" and kinds[-2:] == ["done", "idle"]
    deltas = [f["text"] for f in frames if f["type"] == "delta"]
    assert len(deltas) >= 5  # streamed, not one blob
    done = frames[-2]
    assert done["status"] == "ok"
    stats = done["stats"]
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0
    assert stats["ttft_ms"] is not None and stats["latency_ms"] >= stats["ttft_ms"]
    assert stats["cost"] is not None and stats["currency"] == "CNY"  # public models are billed per token

    answer = await sync_to_async(Message.objects.get)(role="assistant")
    assert answer.content == "".join(deltas) and answer.status == AnswerStatus.OK
    await sync_to_async(ingestion.ingest_all)()
    record = await sync_to_async(UsageRecord.objects.get)(pk=answer.request_id)
    assert record.source == UsageSource.PLAYGROUND and record.org_id == org.pk and record.user_id == alice.pk
    assert record.completion_tokens == answer.completion_tokens
    await communicator.disconnect()


@in_own_loop
async def test_stop_aborts_upstream_and_keeps_what_was_streamed(alice, funded, public_model, slow_simulator):
    await sync_to_async(_with_replica)(public_model, slow_simulator)
    communicator, _connected, _ = await _open(alice)
    await communicator.send_json_to(_send(params={"max_tokens": 400}))
    await _until(communicator, "delta")
    await communicator.send_json_to({"type": "stop"})
    frames = await _until(communicator, "idle")
    done = next(f for f in frames if f["type"] == "done")
    assert done["status"] == "stopped"
    answer = await sync_to_async(Message.objects.get)(role="assistant")
    assert answer.status == AnswerStatus.STOPPED and answer.content
    stats = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(f"{slow_simulator}/_sim/stats")))
    assert stats["requests_aborted"] == 1
    await communicator.disconnect()


@in_own_loop
async def test_no_ready_replica_is_a_clear_message(alice, funded, public_model):
    communicator, _connected, _ = await _open(alice)
    await communicator.send_json_to(_send())
    frames = await _until(communicator, "idle")
    error = next(f for f in frames if f["type"] == "error")
    assert error["lane"] == 0 and error["code"] == "no_ready_replica"
    assert "no ready replica" in error["message"]
    assert next(f for f in frames if f["type"] == "done")["status"] == "error"
    await communicator.disconnect()


@in_own_loop
async def test_insufficient_quota_is_a_clear_message_and_nothing_is_streamed(alice, org, public_model, simulator):
    await sync_to_async(_with_replica)(public_model, simulator)
    communicator, _connected, _ = await _open(alice)
    await communicator.send_json_to(_send())
    frames = await _until(communicator, "idle")
    error = next(f for f in frames if f["type"] == "error")
    assert error["lane"] == 0 and error["code"] == "insufficient_quota"
    assert "balance is used up" in error["message"]
    assert not [f for f in frames if f["type"] == "delta"]
    answer = await sync_to_async(Message.objects.get)(role="assistant")
    assert answer.status == AnswerStatus.ERROR and answer.error_code == "insufficient_quota"
    await communicator.disconnect()


@in_own_loop
async def test_busy_socket_refuses_a_second_prompt(alice, funded, public_model, slow_simulator):
    await sync_to_async(_with_replica)(public_model, slow_simulator)
    communicator, _connected, _ = await _open(alice)
    await communicator.send_json_to(_send())
    await _until(communicator, "delta")
    await communicator.send_json_to(_send(content="again"))
    frames = await _until(communicator, "error")
    assert frames[-1]["code"] == "busy"
    await communicator.send_json_to({"type": "stop"})
    await _until(communicator, "idle")
    assert await sync_to_async(Message.objects.filter(role="user").count)() == 1
    await communicator.disconnect()


@in_own_loop
async def test_compare_mode_streams_both_models_in_parallel(alice, funded, org, public_model, org_service, simulator):
    await sync_to_async(_with_replica)(public_model, simulator)
    await sync_to_async(_with_replica)(org_service, simulator)
    communicator, _connected, _ = await _open(alice)
    await communicator.send_json_to(_send(compare_model="acme/my-llama"))
    frames = await _until(communicator, "idle")
    done = {f["lane"]: f for f in frames if f["type"] == "done"}
    assert done[0]["model"] == PUBLIC_ID and done[1]["model"] == "acme/my-llama"
    assert done[0]["status"] == done[1]["status"] == "ok"
    assert done[1]["stats"]["cost"] is None  # dedicated services are billed per instance-hour
    assert {f["lane"] for f in frames if f["type"] == "delta"} == {0, 1}
    lanes = await sync_to_async(
        lambda: sorted(Message.objects.filter(role="assistant").values_list("lane", flat=True))
    )()
    assert lanes == [0, 1]
    await communicator.disconnect()


@in_own_loop
async def test_regenerate_replaces_the_last_answer(alice, funded, public_model, simulator):
    await sync_to_async(_with_replica)(public_model, simulator)
    communicator, _connected, _ = await _open(alice)
    await communicator.send_json_to(_send())
    first = await _until(communicator, "idle")
    conversation_id = first[0]["id"]
    await communicator.send_json_to(
        {
            "type": "regenerate",
            "conversation": conversation_id,
            "model": PUBLIC_ID,
            "system": "Be brief.",
            "params": {"temperature": 1.2, "max_tokens": 32},
        }
    )
    second = await _until(communicator, "idle")
    assert second[0]["type"] == "conversation" and second[0]["created"] is False
    assert [f["status"] for f in second if f["type"] == "done"] == ["ok"]
    answers = await sync_to_async(lambda: list(Message.objects.filter(role="assistant")))()
    assert len(answers) == 1 and answers[0].completion_tokens <= 32
    await communicator.disconnect()


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([(b"cookie", b"django_language=zh-hans; sessionid=x")], "zh-hans"),
        ([(b"accept-language", b"zh-CN,zh;q=0.9,en;q=0.8")], "zh-hans"),
        ([(b"accept-language", b"fr-FR")], "en"),
        ([], "en"),
    ],
)
def test_socket_language_follows_cookie_then_browser(headers, expected):
    from playground.consumers import _language_of

    assert _language_of({"headers": headers}) == expected


def _scaled_to_zero(service, wait_s: int):
    from deployments.models import ScalingMode, ServiceStatus

    service.status, service.instances, service.ready_instances = ServiceStatus.IDLE, 0, 0
    service.scaling_mode, service.min_instances, service.max_wake_wait_s = ScalingMode.AUTOSCALE, 0, wait_s
    service.save()


@in_own_loop
async def test_a_request_held_while_the_model_wakes_says_it_is_starting(alice, funded, public_model):
    await sync_to_async(_scaled_to_zero)(public_model, 1)  # nothing wakes it here: the wait ends after a second
    communicator, _connected, _ = await _open(alice)
    await communicator.send_json_to(_send())
    frames = await _until(communicator, "idle")
    kinds = [f["type"] for f in frames]
    waking = next(f for f in frames if f["type"] == "waking")
    assert waking["lane"] == 0 and waking["model"] == PUBLIC_ID
    error = next(f for f in frames if f["type"] == "error")
    assert kinds.index("waking") < kinds.index("error") and error["code"] == "service_unavailable"
    await communicator.disconnect()
