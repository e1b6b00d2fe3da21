"""Faults around the gateway: Redis going away and coming back, a replica dying mid-stream."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import pytest

from tests.gateway.conftest import TRANSPORTS, gateway_server
from tests.support import servers

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = [{"role": "user", "content": "hi"}]


def _chat(v1: str, key: str, **body) -> httpx.Response:
    return httpx.post(
        v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "public/tiny-chat", "messages": CHAT, "max_tokens": 3, **body},
        timeout=20,
    )


@contextmanager
def _redis_server(port: int):
    """A throwaway redis-server on ``port`` (no persistence), stopped by SIGKILL on exit."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield process
    finally:
        process.kill()
        process.wait(10)


@pytest.mark.parametrize("path", TRANSPORTS)
def test_redis_outage_answers_503_logged_once_and_recovers(path, api_key, public_model, capfd):
    port = servers.free_port()
    with _redis_server(port) as redis_process:
        with gateway_server(REDIS_URL=f"redis://127.0.0.1:{port}/0", GATEWAY_TRANSPORT=path) as url:
            v1 = url + "/v1"
            assert _chat(v1, api_key).status_code == 200
            redis_process.kill()
            redis_process.wait(10)
            for stream in (False, True, False):
                response = _chat(v1, api_key, stream=stream)
                assert response.status_code == 503
                assert response.headers["retry-after"] == "2"
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}
                assert (error["type"], error["code"]) == ("server_error", "service_unavailable")
            logged = capfd.readouterr().err
            assert logged.count("Redis is unreachable") == 1, logged  # once per outage, not per request
            assert "Traceback" not in logged
            with _redis_server(port):
                deadline = time.monotonic() + 10
                while (response := _chat(v1, api_key)).status_code != 200 and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert response.status_code == 200
                streamed = _chat(v1, api_key, stream=True)
                assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
                assert "Redis is reachable again" in capfd.readouterr().err


@contextmanager
def _simulator_process(model: str):
    """The engine simulator as its own process (slow tokens), to be killed mid-stream; yields (process, base URL)."""
    port = servers.free_port()
    args = ["--port", str(port), "--served-model-name", model, "--ttft-ms", "5", "--itl-ms", "40"]
    process = subprocess.Popen([sys.executable, "-m", "simulator", *args], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.05)
        yield process, url
    finally:
        process.kill()
        process.wait(10)


def test_a_stream_cut_by_a_replica_crash_ends_with_an_error_event(
    any_v1, api_key, public_org, make_catalog_model, make_service
):
    with _simulator_process("public/doomed-small") as (replica, url):
        make_service(org=public_org, model=make_catalog_model("doomed-chat"), name="doomed-small", replicas=[url])
        body = {"model": "public/doomed-chat", "messages": CHAT, "max_tokens": 200, "stream": True}
        headers = {"Authorization": f"Bearer {api_key}"}
        received = b""
        with httpx.stream("POST", any_v1 + "/chat/completions", json=body, headers=headers, timeout=20) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                if not received:
                    replica.kill()  # the replica crashes after its first tokens
                received += chunk
    events = [event for event in received.decode().split("\n\n") if event.strip()]
    assert len(events) >= 2 and b"[DONE]" not in received
    last = json.loads(events[-1].removeprefix("data: "))
    assert set(last) == {"error"}
    assert (last["error"]["type"], last["error"]["code"]) == ("server_error", "upstream_disconnected")
    assert "public/doomed-chat" in last["error"]["message"]


@pytest.mark.parametrize("path", TRANSPORTS)
def test_a_request_answered_while_redis_went_down_keeps_its_usage(
    path, api_key, public_org, make_catalog_model, make_service
):
    """The stream was admitted, Redis died before it ended: its usage record is sent once Redis is back."""
    port = servers.free_port()
    with _simulator_process("public/slow-small") as (_replica, replica_url):
        make_service(org=public_org, model=make_catalog_model("slow-chat"), name="slow-small", replicas=[replica_url])
        with _redis_server(port) as redis_process:
            with gateway_server(REDIS_URL=f"redis://127.0.0.1:{port}/0", GATEWAY_TRANSPORT=path) as url:
                body = {"model": "public/slow-chat", "messages": CHAT, "max_tokens": 20, "stream": True}
                headers = {"Authorization": f"Bearer {api_key}"}
                received = b""
                with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=headers, timeout=20) as r:
                    assert r.status_code == 200
                    request_id = r.headers["x-request-id"]
                    for chunk in r.iter_bytes():
                        if not received:
                            redis_process.kill()  # Redis dies while the answer is still streaming
                            redis_process.wait(10)
                        received += chunk
                assert received.rstrip().endswith(b"data: [DONE]")  # the user got the whole answer
                with _redis_server(port):  # back, empty: the held settlement carries the record
                    import redis as redis_lib

                    from metering.ingestion import stream_key

                    client = redis_lib.Redis(port=port)
                    deadline = time.monotonic() + 15
                    while not (entries := client.xrange(stream_key())) and time.monotonic() < deadline:
                        time.sleep(0.1)
                    records = [json.loads(fields[b"r"]) for _id, fields in entries]
                    assert [r["id"] for r in records] == [request_id]
                    assert records[0]["completion_tokens"] == 20
