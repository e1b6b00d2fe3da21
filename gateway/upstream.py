"""Pooled HTTP connections to replicas (one aiohttp session per event loop) and the TLS settings they need."""
from __future__ import annotations

import asyncio
import ssl
import weakref

import aiohttp
from django.conf import settings

_sessions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession]" = weakref.WeakKeyDictionary()
# Per loop, a suspended async generator whose ``finally`` closes that loop's session: asyncio.run, uvicorn (which
# runs on asyncio.run), asgiref's async_to_sync and pytest-asyncio all call ``loop.shutdown_asyncgens()`` before
# closing a loop, so the session is closed while its loop can still run the close.
_closers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object]" = weakref.WeakKeyDictionary()
_ssl_contexts: dict = {}


async def _close_with_loop(client: aiohttp.ClientSession):
    try:
        yield
    finally:
        if not client.closed:
            await client.close()


def session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    client = _sessions.get(loop)
    if client is None or client.closed:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30, enable_cleanup_closed=True)
        client = aiohttp.ClientSession(connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",))
        _sessions[loop] = client
        closer = _close_with_loop(client)
        try:
            closer.__anext__().send(None)  # runs to the yield; the loop's asyncgen hook now tracks it
        except StopIteration:
            pass
        _closers[loop] = closer
    return client


async def close_upstream_sessions() -> None:
    """Close this event loop's pooled upstream connections (lifespan shutdown, test fixtures)."""
    loop = asyncio.get_running_loop()
    client = _sessions.pop(loop, None)
    closer = _closers.pop(loop, None)
    if closer is not None:
        await closer.aclose()
    if client is not None and not client.closed:
        await client.close()


close_session = close_upstream_sessions


_timeouts: dict = {}


def timeout() -> aiohttp.ClientTimeout:
    key = (settings.GATEWAY_CONNECT_TIMEOUT, settings.GATEWAY_IDLE_TIMEOUT)
    value = _timeouts.get(key)
    if value is None:
        value = _timeouts[key] = aiohttp.ClientTimeout(total=None, sock_connect=float(key[0]), sock_read=float(key[1]))
    return value


def ssl_for(endpoint):
    """The ``ssl`` argument for aiohttp: None (default verification), False, or a context with a CA or client cert."""
    if not endpoint.base_url.startswith("https:"):
        return None
    verify, cert = endpoint.tls_verify, endpoint.client_cert
    if verify is True and cert is None:
        return None
    if verify is False and cert is None:
        return False
    key = (verify, cert)
    context = _ssl_contexts.get(key)
    if context is None:
        context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cert is not None:
            context.load_cert_chain(*cert)
        _ssl_contexts[key] = context
    return context
