"""Reading a replica's Prometheus text (``deployments.replica_metrics``): vLLM's gauges and the TTFT histogram's p95
over the interval between two reads; an engine simulator's real ``/metrics`` read through the selectors."""

from __future__ import annotations

import httpx
import pytest

from deployments.replica_metrics import Scraper, _p95_ms, parse
from simulator import run_simulator
from tests.factories import CatalogModelFactory, ServiceFactory
from tests.support.servers import free_port


def _service(org, url: str):
    return ServiceFactory(
        org=org, catalog_model=CatalogModelFactory(slug="metrics"), name="metrics", replica_urls=[url]
    )


EXPOSITION = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="acme/chat"} 3.0
vllm:num_requests_waiting{model_name="acme/chat"} 5.0
vllm:kv_cache_usage_perc{model_name="acme/chat"} 0.42
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="acme/chat"} 10.0
vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="acme/chat"} 18.0
vllm:time_to_first_token_seconds_bucket{le="1.0",model_name="acme/chat"} 20.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="acme/chat"} 20.0
vllm:time_to_first_token_seconds_count{model_name="acme/chat"} 20.0
"""


def test_gauges_and_histogram_are_read():
    reading = parse(EXPOSITION)
    assert (reading.running, reading.waiting, reading.kv_cache_usage) == (3.0, 5.0, 0.42)
    assert reading.ttft_buckets == {0.1: 10.0, 0.5: 18.0, 1.0: 20.0, float("inf"): 20.0}


def test_a_replica_whose_metrics_are_not_prometheus_text_is_left_out(org):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Garbage(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"vllm:num_requests_running{model_name= 3 oops\n\x00\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert Scraper().scrape([str(_service(org, url).pk)]) == {}
    finally:
        server.shutdown()


def test_the_p95_is_of_the_interval_between_two_reads():
    before = {0.1: 10.0, 0.5: 18.0, 1.0: 20.0, float("inf"): 20.0}
    now = {0.1: 10.0, 0.5: 19.0, 1.0: 40.0, float("inf"): 40.0}  # 20 new observations, 19 of them over 0.5 s
    assert _p95_ms(now, before) == 1000
    assert _p95_ms(before, before) is None  # nothing new
    assert _p95_ms(before, now) is None  # counts went down: the replica restarted


@pytest.mark.django_db
def test_a_simulators_metrics_are_scraped_through_the_selectors(org):
    with run_simulator(served_model_names=("acme/metrics",), ttft_ms=1, itl_ms=1) as url:
        service = _service(org, url)
        scraper = Scraper()
        assert scraper.scrape([str(service.pk)])[str(service.pk)].ttft_p95_ms is None  # the first read: no interval
        for _ in range(5):
            body = {"model": "acme/metrics", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            assert httpx.post(url + "/v1/chat/completions", json=body, timeout=10).status_code == 200
        metrics = scraper.scrape([str(service.pk)])[str(service.pk)]
        assert metrics.replicas == 1 and metrics.running == 0 and metrics.waiting == 0
        assert metrics.kv_cache_usage is not None
        assert metrics.ttft_p95_ms is not None and metrics.ttft_p95_ms <= 1000


@pytest.mark.django_db
def test_a_replica_that_does_not_answer_is_left_out(org):
    service = _service(org, f"http://127.0.0.1:{free_port()}")
    assert Scraper().scrape([str(service.pk)]) == {}
