"""Redis access for the gateway: one async client per event loop, one sync client per process, key names."""
from __future__ import annotations

import asyncio
import threading
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = weakref.WeakKeyDictionary()
_sync_client: redis.Redis | None = None
_sync_lock = threading.Lock()


def prefix() -> str:
    return settings.GATEWAY_REDIS_PREFIX


def k(*parts) -> str:
    """A gateway key name: the configured prefix, then the parts joined by colons."""
    return prefix() + ":".join(str(p) for p in parts)


def aredis() -> aioredis.Redis:
    """The async client bound to the running loop (redis.asyncio connections cannot cross loops)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        # A blocking pool: under a burst, requests wait for a free connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(settings.REDIS_URL, max_connections=128, timeout=10,
                                                        health_check_interval=30)
        client = aioredis.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client


def sredis() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        with _sync_lock:
            if _sync_client is None:
                _sync_client = redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30)
    return _sync_client


class LuaScript:
    """A Lua script run by EVALSHA on either client, loading it on NOSCRIPT."""

    def __init__(self, source: str):
        import hashlib

        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def acall(self, keys: list[str], args: list, client: aioredis.Redis | None = None):
        client = client or aredis()
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)

    def call(self, keys: list[str], args: list, client: redis.Redis | None = None):
        client = client or sredis()
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)
