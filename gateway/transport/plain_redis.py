"""The plain Redis client: redis-py's asyncio client behind the hot path's :class:`RedisClient` interface.

Replies are raw, as the pipelined client returns them (redis-py's per-command reply callbacks are off: ``SET``
answers ``b"OK"``, not ``True``), and ``later`` commands are simply sent now: redis-py has no write coalescing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio as aioredis


def _forget(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a lost progress marker is not an error of anyone waiting


class PlainRedis:
    """A blocking redis-py pool: under a burst, commands wait for a free connection instead of failing."""

    def __init__(self, url: str):
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=128, timeout=10, health_check_interval=30)
        self.client = aioredis.Redis(connection_pool=pool)
        self.client.response_callbacks.clear()

    async def execute(self, *args: Any, later: bool = False) -> Any:
        try:
            return await self.client.execute_command(*args)
        except redis.exceptions.ConnectionError:
            # Redis went away: every pooled connection belongs to the old server. Drop them all now, so that once it
            # is back no request fails on a stale one (each would fail once, and answer 503, otherwise).
            await self.client.connection_pool.disconnect(inuse_connections=False)
            raise

    def fire(self, *args: Any) -> None:
        asyncio.ensure_future(self.client.execute_command(*args)).add_done_callback(_forget)

    def piggyback(self, *args: Any) -> None:
        self.fire(*args)  # no write coalescing here: sent now

    async def close(self) -> None:
        await self.client.aclose()
