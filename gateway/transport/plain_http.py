"""The plain upstream client: httpx, one ``AsyncClient`` per event loop, answering with the fast client's interface.

Same request as :mod:`gateway.transport.http` (a POST of the JSON body with ``X-Request-Id``, the endpoint's extra
headers and TLS settings), the same timeouts (``GATEWAY_CONNECT_TIMEOUT`` to connect, ``GATEWAY_IDLE_TIMEOUT``
between bytes) and the same errors: every transport failure is raised as an ``OSError`` (``UpstreamError``) or
``TimeoutError``, so the gateway's core cannot tell the two clients apart.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx
from django.conf import settings

from gateway.transport.http import KEEPALIVE_S, UpstreamError, ssl_for

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def _translate(exc: httpx.HTTPError) -> Exception:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):  # as the fast client raises it (a failed certificate check)
            return cause
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectTimeout):
        return TimeoutError(f"connecting to the replica timed out: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(f"the replica sent nothing for {float(settings.GATEWAY_IDLE_TIMEOUT):g} s")
    return UpstreamError(f"the replica's connection failed: {exc!r}")


class Response:
    """One answer being read through httpx (see :class:`gateway.transport.UpstreamResponse`)."""

    __slots__ = ("status", "_response", "_chunks", "_done")

    def __init__(self, response: httpx.Response):
        self.status = response.status_code
        self._response = response
        self._chunks: AsyncIterator[bytes] = response.aiter_raw()
        self._done = False

    async def next_chunk(self) -> bytes | None:
        try:
            async for chunk in self._chunks:
                if chunk:
                    return chunk
            if not self._done:  # read to its end: the connection goes back to the pool now
                self._done = True
                await self._response.aclose()
        except httpx.HTTPError as exc:
            raise _translate(exc) from exc
        return None

    async def read(self) -> bytes:
        parts = []
        while (chunk := await self.next_chunk()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Done with the answer: its connection went back to the pool when the body was read to its end; an answer
        not read to its end closes it."""
        self.close()

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        # aclose() of an answer not read to its end closes its connection (the replica sees the client go away);
        # it does not wait on the network, so it runs as a task of its own.
        closing = asyncio.ensure_future(self._response.aclose())
        closing.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _client(endpoint: Any) -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    by_tls = _clients.get(loop)
    if by_tls is None:
        by_tls = _clients[loop] = {}
    tls = ssl_for(endpoint)
    key = (id(tls),)
    client = by_tls.get(key)
    if client is None:
        timeout = httpx.Timeout(
            connect=float(settings.GATEWAY_CONNECT_TIMEOUT),
            read=float(settings.GATEWAY_IDLE_TIMEOUT),
            write=float(settings.GATEWAY_IDLE_TIMEOUT),
            pool=None,
        )
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=KEEPALIVE_S)
        client = by_tls[key] = httpx.AsyncClient(verify=tls or True, timeout=timeout, limits=limits)
    return client


async def request(endpoint: Any, path: str, body: bytes, request_id: str) -> Response:
    """POST ``body`` to ``endpoint.base_url + path``; the response once its status line and headers are in."""
    headers = {"Content-Type": "application/json", **endpoint.headers, "X-Request-Id": request_id}
    client = _client(endpoint)
    url = endpoint.base_url.rstrip("/") + path
    try:
        try:
            response = await client.send(client.build_request("POST", url, content=body, headers=headers), stream=True)
        except httpx.RemoteProtocolError:
            # The server closed a pooled keep-alive connection as the request went out, before any byte of an
            # answer: sent once more on a fresh connection, as the fast client does.
            response = await client.send(client.build_request("POST", url, content=body, headers=headers), stream=True)
    except httpx.HTTPError as exc:
        raise _translate(exc) from exc
    return Response(response)


async def close_upstream_sessions() -> None:
    """Close this event loop's httpx clients."""
    by_tls = _clients.pop(asyncio.get_running_loop(), None)
    for client in (by_tls or {}).values():
        await client.aclose()
