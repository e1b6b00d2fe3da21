"""How the gateway talks to replicas, to Redis and to its own client: a fast path and a plain one for each.

``GATEWAY_TRANSPORT`` picks them together:

- ``fast`` (the default): :mod:`.http`, a lean HTTP/1.1 client on raw asyncio protocols, for replicas;
  :mod:`.resp`, one pipelined RESP connection per event loop, for the hot path's Redis commands; and
  :mod:`.uvicorn`, which writes a stream's middle chunks straight to uvicorn's transport. Together they roughly
  halve the gateway's CPU per token (bench/README.md, Gateway), but the relay reaches into uvicorn's private
  response cycle: it checks its assumptions per stream and falls back to plain ASGI ``send`` (with one WARNING)
  when they do not hold, so a uvicorn upgrade slows streams down rather than breaking them.
- ``plain``: httpx (:mod:`.plain_http`), redis-py's asyncio client (:mod:`.plain_redis`) and one ASGI body
  message per upstream read. Nothing private is touched; the same tests run on both paths.

Each side has one small interface (:class:`UpstreamResponse`, :class:`RedisClient` below). The choice is bound once
(:func:`select`, at import and when a test changes the setting), never made per request; :func:`announce` logs the
live path once per process (at lifespan startup).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

logger = logging.getLogger(__name__)

FAST, PLAIN = "fast", "plain"
CHOICES = (FAST, PLAIN)
# Errors of an upstream request (a refused or dropped connection, an invalid answer, the idle timeout).
UPSTREAM_ERRORS = (asyncio.TimeoutError, OSError)


class UpstreamResponse(Protocol):
    """A replica's answer being read: ``status`` is known; then the body; then ``release()`` or ``close()``."""

    status: int

    async def next_chunk(self) -> bytes | None:
        """Everything of the body that arrived since the last call (at least one byte); None at its end."""

    async def read(self) -> bytes:
        """The rest of the body."""

    def release(self) -> None:
        """Done with the answer: its connection is reused if the answer was read to its end, else dropped."""

    def close(self) -> None:
        """Abort the request: the connection is closed (vLLM aborts the sequence)."""


class RedisClient(Protocol):
    """The hot path's Redis commands; replies raw (bytes, ints, lists, None), errors as redis-py raises them."""

    async def execute(self, *args: Any, later: bool = False) -> Any:
        """Run a command; with ``later`` it may be written together with others at the end of this loop iteration."""

    def fire(self, *args: Any) -> None:
        """Send a command now that nobody waits on (its reply and any error are dropped): progress markers."""

    def piggyback(self, *args: Any) -> None:
        """As ``fire``, but it may wait (briefly, in order) to go out with the next command written."""

    async def close(self) -> None:
        """Close the connection(s)."""


def live() -> str:
    """The configured transport, ``fast`` or ``plain``."""
    return str(settings.GATEWAY_TRANSPORT)


_announced = False


def announce() -> None:
    """Log once per process which path is live (INFO), with the uvicorn release the fast relay was written against."""
    global _announced
    if _announced:
        return
    _announced = True
    if fast:
        from gateway.transport import uvicorn as relay

        logger.info(
            "gateway transport: fast (HTTP/1.1 client, pipelined RESP, direct stream relay written against "
            "uvicorn %s; uvicorn %s installed)",
            relay.WRITTEN_AGAINST,
            relay.installed_version(),
        )
    else:
        logger.info("gateway transport: plain (httpx, redis-py asyncio, ASGI send)")


# Bound by select(): read as ``transport.request`` / ``transport.fast`` on the hot path (a module attribute, as a
# direct import would cost), so that the choice costs nothing per request.
request: Callable[[Any, str, bytes, str], Awaitable[UpstreamResponse]]
"""POST ``body`` to ``endpoint.base_url + path`` (``request(endpoint, path, body, request_id)``); the answer once
its status line and headers are in. Raises one of UPSTREAM_ERRORS."""
fast: bool
_redis_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisClient] = weakref.WeakKeyDictionary()


def select() -> None:
    """Bind the configured path's clients: at import, and again when a test changes ``GATEWAY_TRANSPORT``."""
    global request, fast
    fast = live() == FAST
    if fast:
        from gateway.transport.http import request as fast_request

        request = fast_request
    else:
        from gateway.transport.plain_http import request as plain_request

        request = plain_request
    _redis_clients.clear()


def redis_client() -> RedisClient:
    """The hot path's Redis client for the running loop (redis connections cannot cross loops)."""
    loop = asyncio.get_running_loop()
    client = _redis_clients.get(loop)
    if client is None:
        if fast:
            from gateway.transport.resp import FastRedis

            client = FastRedis(settings.REDIS_URL)
        else:
            from gateway.transport.plain_redis import PlainRedis

            client = PlainRedis(settings.REDIS_URL)
        _redis_clients[loop] = client
    return client


async def close_upstream_sessions() -> None:
    """Close this event loop's pooled upstream connections, on either path (lifespan shutdown, test fixtures)."""
    from gateway.transport import http, plain_http

    await http.close_upstream_sessions()
    await plain_http.close_upstream_sessions()


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "GATEWAY_TRANSPORT":
        select()


select()
