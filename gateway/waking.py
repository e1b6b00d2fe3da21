"""Wake on request: a request for an autoscaling service with no ready instance is held until one is ready.

Such a service is Idle (scaled to zero by its policy) or on its way up after a wake (``Target.wake_service_id``,
``deployments.selectors``); a request for any other service with no ready replica is answered 503 at once, as before.

Holding costs no thread and no polling per request. Each worker (event loop) keeps one :class:`_Wake` per target
being waited for: a future its held requests await, and one watcher task that looks for a ready replica every
``POLL_SECONDS`` through the cached lookups (the serving epoch is re-read first, so a replica that became ready is
seen within about half a second of its reconcile pass; the replica list is also reloaded outright every
``RELOAD_SECONDS``, so that a missed epoch bump costs a second, not the cache's TTL). When one is ready the future
gets the endpoints and every held request is sent at once. 1,000 held requests are 1,000 awaits on one future and
cost the worker's other requests nothing measurable (bench/README.md, "Wake on request").

Signals (``deployments.serving_signals``): every held request counts in ``held`` of its service's signal hash,
HINCRBY +1 when it starts waiting and -1 when it stops for whatever reason (sent, timed out, client gone, cancelled),
both fired without a reply, in order, on the worker's Redis connection. The watcher adds the service to the ``wake``
set and pushes ``wake:notify`` (trimmed to ``NOTIFY_KEEP``) when it starts, and again every ``WAKE_REPEAT_SECONDS``
while requests wait, so that a wake lost to a race (the service scaled to zero once more meanwhile) is asked for
again; waking is idempotent (``deployments.services.service_wake``, called by the autoscaler's loop through
``deployments.services.wake_pending``). A worker killed while holding has its ``held`` counts taken back by the
open-request sweeper (``metering.open_requests``), as its in-flight counts are.

A held request is admitted first (rate limits, balance, its reservation), so a request that would be refused is
refused at once and wakes nothing. Past the service's ``max_wake_wait_s`` it is answered ``503 service_unavailable``
with ``Retry-After`` and settles like any refused request: its reservation is released and nothing is charged.
A held stream may get its headers and SSE comments (``: waking``) meanwhile (``Call.on_hold``, the ASGI edge).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings

from deployments.serving_signals import signal_key, wake_key, wake_notify_key
from gateway import admission, errors, lookups
from gateway.store import fredis
from metering.open_requests import HELD_FIELD_PREFIX

if TYPE_CHECKING:
    from gateway.core import Call
    from gateway.lookups import Target

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often a watcher looks at the cached replica list
RELOAD_SECONDS = 1.0  # ...and reloads it from the database whatever the cache says
WAKE_REPEAT_SECONDS = 5.0  # the wake is asked for again this often while requests wait
NOTIFY_KEEP = 16  # wake:notify only tells the autoscaler to look at the set: a few elements are enough

# A held request counts in its service's ``held`` and, under its worker, in the worker's open-requests hash, so that
# the sweeper takes a dead worker's held requests back (``metering.open_requests``); a field goes when it is 0.
_HELD = """
redis.call('HINCRBY', KEYS[1], 'held', ARGV[2])
if redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[2]) == 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
"""


class ClientGone(Exception):
    """The client of a held request went away before an instance was ready."""


class _Wake:
    """The held requests of one worker for one target, and the future they wait on."""

    __slots__ = ("service_ids", "wake_id", "held", "ready", "task")

    def __init__(self, service_ids: tuple, wake_id: str):
        self.service_ids = service_ids
        self.wake_id = wake_id
        self.held = 0
        self.ready: asyncio.Future[list] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None


_tables: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, _Wake]] = weakref.WeakKeyDictionary()


def _table() -> dict[tuple, _Wake]:
    loop = asyncio.get_running_loop()
    table = _tables.get(loop)
    if table is None:
        table = _tables[loop] = {}
    return table


def held_here() -> int:
    """How many requests this worker (the running loop) holds now (tests, diagnostics)."""
    return sum(wake.held for wake in _table().values())


def _ask(service_id: str) -> None:
    client = fredis()
    client.fire("SADD", wake_key(), service_id)
    client.fire("LPUSH", wake_notify_key(), service_id)
    client.fire("LTRIM", wake_notify_key(), 0, NOTIFY_KEEP - 1)


async def _watch(wake: _Wake, table: dict[tuple, _Wake]) -> None:
    """Until a replica is ready or no request waits: look for one, and ask for the wake again now and then."""
    asked = reloaded = time.monotonic()
    try:
        _ask(wake.wake_id)
        while wake.held > 0:
            await asyncio.sleep(POLL_SECONDS)
            now = time.monotonic()
            try:
                if now - reloaded >= RELOAD_SECONDS:
                    reloaded = now
                    found = await lookups.endpoints.reload(wake.service_ids)
                else:
                    await lookups.check_epochs()
                    found = await lookups.endpoints_for(wake.service_ids)
                if found:
                    wake.ready.set_result(found)
                    return
                if now - asked >= WAKE_REPEAT_SECONDS:
                    asked = now
                    _ask(wake.wake_id)
            except Exception as exc:  # Redis or the database away a moment: keep waiting, the deadline bounds it
                logger.warning("waiting for %s: %r", wake.wake_id, exc)
    finally:
        # Synchronous with the loop's check above: a request that joins later finds no entry and starts a new one.
        if table.get(wake.service_ids) is wake:
            del table[wake.service_ids]


async def _disconnected(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # a receive that failed: the request ends as its client gone


async def hold(call: Call, target: Target) -> list:
    """Wait until a replica of ``target`` is ready; its endpoints. Raises ``GatewayError`` (503 with Retry-After)
    past the service's ``max_wake_wait_s``, and :class:`ClientGone` when the client leaves meanwhile."""
    assert target.wake_service_id is not None
    table = _table()
    wake = table.get(target.service_ids)
    if wake is None:
        wake = table[target.service_ids] = _Wake(target.service_ids, target.wake_service_id)
        wake.task = asyncio.get_running_loop().create_task(_watch(wake, table))
    wake.held += 1
    signal, worker_key = signal_key(target.wake_service_id), admission.worker_open_key()
    field = HELD_FIELD_PREFIX + target.wake_service_id
    fredis().fire("EVAL", _HELD, 2, signal, worker_key, field, 1)
    waited_s = target.max_wake_wait_s
    deadline = time.monotonic() + waited_s
    keepalive = settings.GATEWAY_WAKE_KEEPALIVE_S if call.on_hold is not None else 0
    gone = asyncio.ensure_future(_disconnected(call.receive)) if call.receive is not None else None
    if gone is not None:
        gone.add_done_callback(_retrieve)
    waits: set[asyncio.Future[Any]] = {wake.ready} if gone is None else {wake.ready, gone}
    tick = 0
    try:
        if call.on_hold is not None:
            await call.on_hold(0)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.wake_timed_out(call.parsed.model_id, waited_s)
            timeout = min(left, keepalive) if keepalive else left
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if wake.ready.done():
                return wake.ready.result()
            if gone is not None and gone.done():
                raise ClientGone
            if keepalive and call.on_hold is not None and deadline - time.monotonic() > 0:
                tick += 1
                await call.on_hold(tick)
    finally:
        wake.held -= 1
        fredis().fire("EVAL", _HELD, 2, signal, worker_key, field, -1)
        if gone is not None:
            gone.cancel()
