"""The serving signals the gateway keeps per service (``gateway.serving``): in-flight requests shared by every gateway
worker, TTFT samples, and a killed worker's counts taken back by the open-request sweeper."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from deployments.serving_signals import signals_read
from metering import open_requests
from simulator import run_simulator
from tests.gateway.conftest import gateway_server

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "acme/signals-llama"


class _Stream(threading.Thread):
    """One streamed chat completion; ``first`` is set once its first token arrived."""

    def __init__(self, v1: str, key: str, max_tokens: int):
        super().__init__(daemon=True)
        self.v1, self.key, self.max_tokens = v1, key, max_tokens
        self.first = threading.Event()
        self.done = False

    def run(self) -> None:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "tell"}],
            "max_tokens": self.max_tokens,
            "ignore_eos": True,
            "stream": True,
        }
        try:
            with httpx.stream(
                "POST", self.v1 + "/chat/completions", json=body, headers={"Authorization": f"Bearer {self.key}"}
            ) as response:
                for text in response.iter_text():
                    if '"content":"' in text:
                        self.first.set()
                    self.done = self.done or "data: [DONE]" in text
        except httpx.HTTPError:
            pass  # its worker was killed
        finally:
            self.first.set()


def _service(org, make_catalog_model, make_service, replicas: list[str]):
    return make_service(org=org, model=make_catalog_model("signals-llama"), name="signals-llama", replicas=replicas)


def _inflight(service) -> int:
    return signals_read([service.pk])[str(service.pk)].inflight


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


@pytest.mark.parametrize("path", ["fast", "plain"])
def test_two_gateway_workers_share_a_services_in_flight_count_and_ttft(
    path, org, api_key, make_catalog_model, make_service
):
    with run_simulator(served_model_names=(MODEL,), ttft_ms=30, itl_ms=20) as replica:
        service = _service(org, make_catalog_model, make_service, [replica])
        with gateway_server(GATEWAY_TRANSPORT=path) as first, gateway_server(GATEWAY_TRANSPORT=path) as second:
            before = time.time()
            streams = [_Stream(first + "/v1", api_key, 60) for _ in range(3)]
            streams += [_Stream(second + "/v1", api_key, 60) for _ in range(2)]
            for stream in streams:
                stream.start()
            for stream in streams:
                assert stream.first.wait(10)
            signals = signals_read([service.pk])[str(service.pk)]
            assert signals.inflight == 5
            assert signals.last_request_at is not None and signals.last_request_at.timestamp() >= before - 1
            for stream in streams:
                stream.join(20)
            assert all(stream.done for stream in streams)
            # A non-streamed request counts too while it runs, and leaves no TTFT sample.
            answer = httpx.post(
                second + "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=20,
            )
            assert answer.status_code == 200
            _wait_for(lambda: _inflight(service) == 0)
            samples = signals_read([service.pk])[str(service.pk)].ttft_ms
            assert len(samples) == 5
            assert all(25 <= sample < 5000 for sample in samples)  # the simulator's 30 ms and the gateway's share


def test_a_refused_request_leaves_no_count(org, api_key, make_catalog_model, make_service, gateway_url):

    service = _service(org, make_catalog_model, make_service, [])
    answer = httpx.post(
        gateway_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=20,
    )
    assert answer.status_code == 503  # no ready replica
    _wait_for(lambda: _inflight(service) == 0)
    assert signals_read([service.pk])[str(service.pk)].last_request_at is not None


def test_a_killed_workers_in_flight_requests_are_taken_back_by_the_sweeper(
    settings, org, api_key, make_catalog_model, make_service
):
    settings.USAGE_OPEN_GRACE_SECONDS = 1
    env = {"USAGE_OPEN_GRACE_SECONDS": "1"}
    with run_simulator(served_model_names=(MODEL,), ttft_ms=2, itl_ms=25) as replica:
        service = _service(org, make_catalog_model, make_service, [replica])
        with gateway_server(with_process=True, **env) as (url, process), gateway_server(**env) as living_url:
            doomed = [_Stream(url + "/v1", api_key, 400) for _ in range(3)]
            living = _Stream(living_url + "/v1", api_key, 120)
            for stream in [*doomed, living]:
                stream.start()
            for stream in [*doomed, living]:
                assert stream.first.wait(10)
            assert _inflight(service) == 4
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            time.sleep(1.5)  # the killed worker's heartbeat is now older than the grace; the living one's is not
            open_requests.open_requests_sweep()
            assert _inflight(service) == 1  # the living worker's stream only
            living.join(20)
            assert living.done
            _wait_for(lambda: _inflight(service) == 0)
