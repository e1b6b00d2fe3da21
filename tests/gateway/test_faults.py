"""Faults around the gateway: Redis going away and coming back, a replica dying mid-stream."""

from __future__ import annotations

import subprocess
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
