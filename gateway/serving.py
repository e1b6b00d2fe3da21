"""The gateway's writes of the serving signals (``deployments.serving_signals``): in-flight requests and TTFT.

Every admitted request counts in its service's ``inflight`` (and sets ``last_ms``) and is taken back when its call
finishes, which also pushes the stream's time to first token onto the service's sample list. Each side is one small
script sent without a reply (``CLIENT REPLY SKIP`` on the fast transport), so it adds no round trip: the admission
side is *piggybacked*, queued just before the admission script and written with it in one write, or, for a request
reserved from a balance slice (no round trip), with the next command any request of the worker writes (within
``transport.resp.PIGGYBACK_S``); the settlement side is fired with the settlement's own deferred write. The scripts are
sent by ``EVAL`` with their source, never ``EVALSHA``: a fired command has no reply to say ``NOSCRIPT`` after a Redis
restart emptied the script cache, and a lost decrement would leave the count wrong for good.

A worker killed mid-request cannot take its increments back, so each one is also counted under the worker, in its
open-requests hash (``metering.open_requests``) as the field ``sig:<service id>``; the sweeper that settles a dead
worker's open requests subtracts those counts from the services' ``inflight``.

Which service a request counts for: its model's only service (dedicated services, and public models served by one
service), decided before admission; for a public model served by several, the service of the replica it is first
routed to (the count then starts at routing).
"""

from __future__ import annotations

import time

from deployments.serving_signals import TTFT_SAMPLES, signal_key, ttft_key
from gateway import admission
from gateway.store import fredis
from metering.open_requests import SIGNAL_FIELD_PREFIX

# The two scripts commute (a worker count's field goes when it is exactly 0, readers clamp a negative total to 0): on
# the plain transport they may reach Redis in either order.
_ARRIVED = """
redis.call('HINCRBY', KEYS[1], 'inflight', 1)
redis.call('HSET', KEYS[1], 'last_ms', ARGV[2])
if redis.call('HINCRBY', KEYS[2], ARGV[1], 1) == 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
"""

_LEFT = """
redis.call('HINCRBY', KEYS[1], 'inflight', -1)
if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) == 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
if ARGV[2] ~= '' then
  redis.call('LPUSH', KEYS[3], ARGV[2])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
end
"""


class Counted:
    """One request's count in a service's signals, taken back once (``left``)."""

    __slots__ = ("service_id", "worker_key", "field")

    def __init__(self, service_id: str, worker_key: str):
        self.service_id = service_id
        self.worker_key = worker_key
        self.field = SIGNAL_FIELD_PREFIX + service_id


def arrived(service_id: str) -> Counted:
    """Count a request in ``service_id``'s in-flight requests (goes out with the loop's next Redis write)."""
    worker_key = admission.worker_open_key()
    counted = Counted(service_id, worker_key)
    fredis().piggyback("EVAL", _ARRIVED, 2, signal_key(service_id), worker_key, counted.field, int(time.time() * 1000))
    return counted


def left(counted: Counted, ttft_ms: int | None) -> None:
    """Take the request back; ``ttft_ms``: its time to first token, kept as a sample (streams only)."""
    fredis().fire(
        "EVAL",
        _LEFT,
        3,
        signal_key(counted.service_id),
        counted.worker_key,
        ttft_key(counted.service_id),
        counted.field,
        "" if ttft_ms is None else ttft_ms,
        TTFT_SAMPLES,
    )
