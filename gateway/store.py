"""Redis access for the gateway: the hot path's client, one redis-py async client per event loop, key names.

The /v1 hot path (admission, settlement, usage, the revocation epoch) goes through :func:`fredis`, the client that
``GATEWAY_TRANSPORT`` selects (:mod:`gateway.transport`: pipelined RESP, or redis-py). Everything else uses
:func:`aredis` (redis-py) or the process's sync client :func:`sredis`.

Redis is the gateway's shared state (limits, reservations, the usage stream): without it no request can be
admitted, so while it is unreachable /v1 answers ``503 service_unavailable`` with ``Retry-After``
(:func:`redis_unavailable`), logged once per outage. Both clients reconnect on the next command, so the gateway
recovers by itself; the first request admitted again ends the outage (:func:`redis_back`, one flag test per request).
A request answered before the outage whose settlement (its usage record and the release of its reservation) Redis
then refused is not lost with it: :func:`keep_until_redis_is_back` holds it in the worker and sends it when Redis is
back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

from core.redis import client, key
from gateway.errors import GatewayError
from gateway.transport import RedisClient, redis_client

logger = logging.getLogger(__name__)

# What a client raises when Redis is unreachable (refused, dropped, timed out), on either transport.
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
REDIS_RETRY_AFTER = 2  # seconds: a restarted Redis is back within a few
outage_since: float | None = None  # when this process found Redis unreachable; None while it answers

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def prefix() -> str:
    return settings.GATEWAY_REDIS_PREFIX


k = key  # a gateway key name: the configured prefix, then the parts joined by colons
sredis = client  # the process's sync client, shared with the apps below the gateway
fredis = redis_client  # the hot path's client for the running loop


def aredis() -> aioredis.Redis:
    """The async client bound to the running loop (redis.asyncio connections cannot cross loops)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        # A blocking pool: under a burst, requests wait for a free connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=128, timeout=10, health_check_interval=30
        )
        client = aioredis.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client


def redis_failed(exc: BaseException) -> None:
    """Note that Redis is unreachable; logged on the outage's first failure only."""
    global outage_since
    if outage_since is None:
        outage_since = time.monotonic()
        logger.error("Redis is unreachable (%r): /v1 answers 503 until it is back", exc)


def redis_unavailable(exc: BaseException) -> GatewayError:
    """The 503 for a request that Redis failed."""
    redis_failed(exc)
    return GatewayError(
        503,
        "The service is temporarily unavailable; retry shortly.",
        type="server_error",
        code="service_unavailable",
        retry_after=REDIS_RETRY_AFTER,
    )


def redis_back() -> None:
    """Redis answered again (a request was admitted): the outage is over."""
    global outage_since
    if outage_since is not None:
        logger.warning("Redis is reachable again after %.1f s", time.monotonic() - outage_since)
        outage_since = None


# Settlements Redis refused during an outage, oldest first, and the task sending them once it is back (per worker).
UNSENT_MAX = 200_000  # ~ a minute and a half of a worker's peak rate; beyond it the oldest are dropped (logged)
_unsent: deque[Callable[[], Awaitable[Any]]] = deque()
_unsent_dropped = 0
_resender: asyncio.Task | None = None


def keep_until_redis_is_back(send: Callable[[], Awaitable[Any]]) -> None:
    """Hold ``send`` (a settlement Redis refused) and call it again, in order, once Redis answers.

    Safe to send twice: ingestion keeps one usage record per request id, and a marked request's settlement does
    nothing once its open marker is gone. An unmarked one sent twice (only if the connection dropped after Redis had
    run it) would release a hold once more, adjusting the Redis budget counters, never the ledger.
    """
    global _resender, _unsent_dropped
    if len(_unsent) >= UNSENT_MAX:
        _unsent.popleft()
        _unsent_dropped += 1
    _unsent.append(send)
    if _resender is None or _resender.done():
        _resender = asyncio.get_running_loop().create_task(_resend())


async def _resend() -> None:
    global _unsent_dropped
    delay = 0.25
    while _unsent:
        await asyncio.sleep(delay)
        try:
            sent = 0
            while _unsent:
                await _unsent[0]()
                _unsent.popleft()
                sent += 1
        except REDIS_ERRORS:
            delay = min(delay * 2, 5.0)
            continue
        except Exception as exc:  # not Redis being down: this settlement cannot be sent; keep the others going
            logger.error("a held settlement failed: %r", exc)
            _unsent.popleft()
            continue
        dropped, _unsent_dropped = _unsent_dropped, 0
        logger.warning("sent %d settlements held while Redis was unreachable (%d dropped)", sent, dropped)
        if dropped:
            logger.error("%d usage records were lost: more than %d settlements waited for Redis", dropped, UNSENT_MAX)


def pending_settlements() -> int:
    """How many settlements this worker holds for Redis (tests, diagnostics)."""
    return len(_unsent)


class LuaScript:
    """A Lua script run by EVALSHA on either client, loading it on NOSCRIPT."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def acall(
        self, keys: list[str], args: list[Any], client: RedisClient | None = None, later: bool = False
    ) -> Any:
        """Run the script on the hot path's client; ``later``: written at the end of this loop iteration."""
        client = client or fredis()
        try:
            return await client.execute("EVALSHA", self.sha, len(keys), *keys, *args, later=later)
        except redis.exceptions.NoScriptError:
            return await client.execute("EVAL", self.source, len(keys), *keys, *args)

    def call(self, keys: list[str], args: list[Any], client: redis.Redis | None = None) -> Any:
        client = client or sredis()
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)
