"""Redis access for the gateway: the hot path's client, one redis-py async client per event loop, key names.

The /v1 hot path (admission, settlement, usage, the revocation epoch) goes through :func:`fredis`, the client that
``GATEWAY_TRANSPORT`` selects (:mod:`gateway.transport`: pipelined RESP, or redis-py). Everything else uses
:func:`aredis` (redis-py) or the process's sync client :func:`sredis`.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

from core.redis import client, key
from gateway.transport import RedisClient, redis_client

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
