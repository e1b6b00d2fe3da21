"""Serving signals: what the gateway sees of each service, kept in Redis and shared by all its workers.

The gateway writes them on the Redis round trips a request already makes (admission, settlement); the autoscaler
(``deployments.autoscaling``) and the console read them here. They need no scrape, which is what lets a service at
zero instances be woken by its first request. Key names, all under the platform prefix (``core.redis.key``):

``sig:<service id>`` (hash)
    ``inflight``: requests admitted and not yet finished; ``held``: requests waiting for an instance (the service is
    Idle, or none of its instances is ready); ``last_ms``: unix milliseconds of the latest request's arrival.
``ttft:<service id>`` (list)
    recent times to first token in milliseconds, newest first, at most ``TTFT_SAMPLES``.
``wake`` (set)
    ids of services a held request waits for; the autoscaler wakes each and removes it.
``wake:notify`` (list)
    one element pushed with every addition to ``wake`` (trimmed to a few): the autoscaler's loop blocks on it between
    ticks (BLPOP), so a wake request is acted on at once rather than at the next tick.

``inflight`` is written by ``gateway.serving``: counted before admission's script (in its write), taken back with the
call's settlement; every worker also keeps its share in its open-requests hash, so that a worker killed mid-request
has its counts taken back by the open-request sweeper (``metering.open_requests``). It includes requests being held
for an instance (they were admitted), so demand is the larger of ``inflight`` and ``held``, never their sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from core import redis as platform_redis

TTFT_SAMPLES = 200


def signal_key(service_id: object) -> str:
    return platform_redis.key("sig", service_id)


def ttft_key(service_id: object) -> str:
    return platform_redis.key("ttft", service_id)


def wake_key() -> str:
    return platform_redis.key("wake")


def wake_notify_key() -> str:
    return platform_redis.key("wake", "notify")


@dataclass(frozen=True)
class ServingSignals:
    inflight: int = 0
    held: int = 0
    last_request_at: datetime | None = None
    ttft_ms: tuple[int, ...] = ()

    @property
    def demand(self) -> int:
        """Requests the service has to serve now (``inflight`` counts held requests too)."""
        return max(self.inflight, self.held)

    def ttft_percentile(self, q: float) -> int | None:
        """The q-th percentile (0-100) of the recent TTFT samples (nearest rank), or None without samples."""
        if not self.ttft_ms:
            return None
        ordered = sorted(self.ttft_ms)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]


def _int(value: bytes | str | None) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def signals_read(service_ids: list) -> dict[str, ServingSignals]:
    """The current signals of each service (by ``str(id)``), in one round trip."""
    if not service_ids:
        return {}
    client = platform_redis.client()
    pipe = client.pipeline(transaction=False)
    for service_id in service_ids:
        pipe.hmget(signal_key(service_id), "inflight", "held", "last_ms")
        pipe.lrange(ttft_key(service_id), 0, TTFT_SAMPLES - 1)
    replies = pipe.execute()
    out = {}
    for i, service_id in enumerate(service_ids):
        (inflight, held, last_ms), samples = replies[2 * i], replies[2 * i + 1]
        last = _int(last_ms)
        out[str(service_id)] = ServingSignals(
            inflight=_int(inflight),
            held=_int(held),
            last_request_at=datetime.fromtimestamp(last / 1000, tz=UTC) if last else None,
            ttft_ms=tuple(_int(s) for s in samples),
        )
    return out


def wake_requests_take() -> list[str]:
    """Ids of services held requests wait for, removed from the set as they are read."""
    client = platform_redis.client()
    ids: list = client.spop(wake_key(), 1000) or []  # type: ignore[assignment]
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
