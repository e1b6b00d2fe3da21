"""Each replica's own ``/metrics`` (vLLM's Prometheus names), read by the autoscaler, never on the request path.

The replicas are reached the way the gateway reaches them (``selectors.ready_endpoints``: the cluster's access mode,
the API-server proxy with its credentials, a pod IP or the ingress URL; the local driver's ``base_url``), each with a
short timeout and all of a tick's reads at once, so a replica that hangs costs the tick ``SCRAPE_TIMEOUT_S`` at most
and leaves its service with the gateway's signals alone. The names read:

- ``vllm:num_requests_running``, ``vllm:num_requests_waiting`` (gauges): requests in the batch and queued;
- ``vllm:kv_cache_usage_perc`` (gauge, 0-1; older vLLM: ``vllm:gpu_cache_usage_perc``);
- ``vllm:time_to_first_token_seconds`` (histogram): its p95 over the interval since the previous read is the
  difference of the two cumulative bucket counts, so a read needs the one before (``Scraper`` keeps them).

The exposition is read with prometheus_client's text parser; only the names above are kept, summed over label sets.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from deployments.selectors import Endpoint, ready_endpoints

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 2.0
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
TTFT_BUCKET = "vllm:time_to_first_token_seconds_bucket"


@dataclass(frozen=True)
class ReplicaReading:
    """One replica's gauges and its TTFT histogram's cumulative buckets (upper bound in seconds → count)."""

    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float | None = None  # 0-1
    ttft_buckets: dict[float, float] = field(default_factory=dict)


def parse(text: str) -> ReplicaReading:
    """The values the autoscaler reads from a Prometheus text exposition (summed over label sets)."""
    running = waiting = 0.0
    kv: float | None = None
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, value = sample.name, float(sample.value)
            if math.isnan(value):
                continue
            if name == RUNNING:
                running += value
            elif name == WAITING:
                waiting += value
            elif name in KV_CACHE:
                kv = value if kv is None else max(kv, value)
            elif name == TTFT_BUCKET and "le" in sample.labels:
                le = float(sample.labels["le"])  # "+Inf" reads as inf
                buckets[le] = buckets.get(le, 0.0) + value
    return ReplicaReading(running=running, waiting=waiting, kv_cache_usage=kv, ttft_buckets=buckets)


def _p95_ms(now: dict[float, float], before: dict[float, float]) -> int | None:
    """The TTFT p95 (ms, a bucket's upper bound) of the observations between two reads of a histogram."""
    bounds = sorted(now)
    counts = [now[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0 or any(c < 0 for c in counts):  # nothing new, or the replica restarted
        return None
    wanted = 0.95 * counts[-1]
    for bound, count in zip(bounds, counts, strict=True):
        if count >= wanted:
            return None if math.isinf(bound) else int(bound * 1000)
    return None


@dataclass(frozen=True)
class ServiceMetrics:
    """What a service's ready replicas said: sums, the busiest KV cache, the interval's TTFT p95 (worst replica)."""

    replicas: int  # how many answered
    running: int
    waiting: int
    kv_cache_usage: float | None
    ttft_p95_ms: int | None


def _read(endpoint: Endpoint) -> ReplicaReading | None:
    try:
        with httpx.Client(
            timeout=SCRAPE_TIMEOUT_S, verify=endpoint.tls_verify, cert=endpoint.client_cert, headers=endpoint.headers
        ) as client:
            answer = client.get(endpoint.base_url.rstrip("/") + "/metrics")
        if answer.status_code != 200:
            return None
        return parse(answer.text)
    except (httpx.HTTPError, OSError, ValueError) as exc:
        log.info("metrics of replica %s unreadable: %r", endpoint.replica, exc)
        return None


class Scraper:
    """Reads the replicas of services; keeps each replica's previous TTFT histogram for the interval's p95."""

    def __init__(self, workers: int = 16):
        self.workers = workers
        self.previous: dict[str, dict[float, float]] = {}

    def scrape(self, service_ids: Iterable[str]) -> dict[str, ServiceMetrics]:
        """``ServiceMetrics`` per service id with at least one replica that answered."""
        endpoints = ready_endpoints(list(service_ids))
        if not endpoints:
            return {}
        with ThreadPoolExecutor(max_workers=min(self.workers, len(endpoints))) as pool:
            readings = list(pool.map(_read, endpoints))
        grouped: dict[str, list[tuple[Endpoint, ReplicaReading]]] = {}
        for endpoint, reading in zip(endpoints, readings, strict=True):
            if reading is not None:
                grouped.setdefault(endpoint.service_id, []).append((endpoint, reading))
        seen = {e.base_url for e in endpoints}
        self.previous = {url: buckets for url, buckets in self.previous.items() if url in seen}
        out: dict[str, ServiceMetrics] = {}
        for service_id, pairs in grouped.items():
            p95s = []
            for endpoint, reading in pairs:
                if reading.ttft_buckets:
                    before = self.previous.get(endpoint.base_url)
                    if before is not None:
                        p95 = _p95_ms(reading.ttft_buckets, before)
                        if p95 is not None:
                            p95s.append(p95)
                    self.previous[endpoint.base_url] = reading.ttft_buckets
            usages = [r.kv_cache_usage for _, r in pairs if r.kv_cache_usage is not None]
            out[service_id] = ServiceMetrics(
                replicas=len(pairs),
                running=int(sum(r.running for _, r in pairs)),
                waiting=int(sum(r.waiting for _, r in pairs)),
                kv_cache_usage=max(usages) if usages else None,
                ttft_p95_ms=max(p95s) if p95s else None,
            )
        return out
