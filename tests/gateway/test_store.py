"""The hot path's pipelined Redis client: commands written later in one batch keep their order with the others."""

from __future__ import annotations

import asyncio

import pytest
import redis
from django.conf import settings

from gateway.store import k, sredis
from gateway.transport.resp import FastRedis

pytestmark = pytest.mark.asyncio


async def test_commands_sent_later_are_batched_and_keep_their_order_with_immediate_ones():
    client = FastRedis(settings.REDIS_URL)
    name = k("store-test", "order")
    sredis().delete(name)
    try:
        await client.execute("PING")  # connected
        first = asyncio.ensure_future(client.execute("SET", name, "a", later=True))
        second = asyncio.ensure_future(client.execute("APPEND", name, "b", later=True))
        await asyncio.sleep(0)  # both queued, not yet written
        assert client.protocol.queued and sredis().get(name) is None
        # An immediate command goes out behind the queued ones, in the same write: its reply is the third.
        assert await client.execute("APPEND", name, "c") == 3
        assert await first == b"OK"
        assert await second == 2
        third = client.execute("APPEND", name, "d", later=True)
        assert await third == 4 and sredis().get(name) == b"abcd"
    finally:
        sredis().delete(name)
        await client.close()


async def test_queued_commands_fail_with_the_connection():
    client = FastRedis(settings.REDIS_URL)
    try:
        await client.execute("PING")
        own_id = await client.execute("CLIENT", "ID")
        queued = asyncio.ensure_future(client.execute("PING", later=True))
        await asyncio.sleep(0)
        assert sredis().client_kill_filter(_id=own_id) == 1  # the server drops the connection before the flush
        with pytest.raises(redis.exceptions.ConnectionError):
            await asyncio.wait_for(queued, 5)
        assert await client.execute("PING") == b"PONG"  # the next command reconnects
    finally:
        await client.close()
