"""Redis access for the gateway: the hot path's client, one redis-py async client per event loop, key names.

The /v1 hot path (admission, settlement, usage, the revocation epoch) goes through :func:`fredis`, the client that
``GATEWAY_TRANSPORT`` selects (:mod:`gateway.transport`: pipelined RESP, or redis-py). Everything else uses
:func:`aredis` (redis-py) or the process's sync client :func:`sredis`.

Redis is the gateway's shared state (limits, reservations, the usage stream): without it no request can be
admitted, so while it is unreachable /v1 answers ``503 service_unavailable`` with ``Retry-After``
(:func:`redis_unavailable`), logged once per outage. Both clients reconnect on the next command, so the gateway
recovers by itself; the first request admitted again ends the outage (:func:`redis_back`, one flag test per request).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
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
