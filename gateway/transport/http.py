"""A lean HTTP/1.1 client for replicas: pooled keep-alive connections per event loop on raw asyncio protocols.

The gateway sends one kind of request (a POST with a JSON body) and relays what comes back, so it needs far less
than a general client: one write per request (head and body together), httptools (llhttp) parsing the response
and decoding chunked transfer encoding, and a reader that hands over everything that arrived since it last looked
as one piece (``next_chunk``). The idle timeout is one watchdog timer per response, re-armed only when it fires,
instead of a timer reset per chunk. Connections are kept per (host, port, TLS settings) and reused LIFO; an idle
connection is dropped after ``KEEPALIVE_S`` (below uvicorn's — and so vLLM's — 5 s keep-alive), and a request on a
reused connection that the server closed before answering is sent once more on a fresh connection.

Every event loop has its own pool; it is closed before its loop closes (``loop.shutdown_asyncgens()``, which
asyncio.run, uvicorn, asgiref and pytest-asyncio all call), on lifespan shutdown, or by ``close_upstream_sessions()``.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import AsyncGenerator
from typing import cast
from urllib.parse import urlsplit

import httptools
from django.conf import settings

KEEPALIVE_S = 4.0
HIGH_WATER = 1 << 20  # buffered response bytes above which reading from the replica pauses


class UpstreamError(OSError):
    """The replica's connection failed or closed early, or its answer is not valid HTTP/1.1."""


class _Stale(Exception):
    """A reused keep-alive connection was closed by the server before any byte of the answer."""


_ssl_contexts: dict = {}


def ssl_for(endpoint):
    """The ssl context for an https endpoint (default verification, none, a CA bundle and/or a client cert)."""
    if not endpoint.base_url.startswith("https:"):
        return None
    verify, cert = endpoint.tls_verify, endpoint.client_cert
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


class _Target:
    """Where an endpoint's requests go, and the request head common to all of them."""

    __slots__ = ("key", "host", "port", "ssl", "server_hostname", "heads", "_prefix", "_common")

    def __init__(self, endpoint):
        parts = urlsplit(endpoint.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"unsupported replica URL {endpoint.base_url!r}")
        tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if tls else 80)
        self.ssl = ssl_for(endpoint) if tls else None
        self.server_hostname = self.host if tls else None
        self.key = (self.host, self.port, id(self.ssl) if tls else None)
        default_port = self.port == (443 if tls else 80)
        host_header = (
            parts.netloc.rpartition("@")[2]
            if not default_port
            else (f"[{self.host}]" if ":" in self.host else self.host)
        )
        prefix = parts.path.rstrip("/")
        extra = "".join(f"{name}: {value}\r\n" for name, value in endpoint.headers.items())
        self.heads: dict = {}
        self._prefix = prefix
        self._common = (f"Host: {host_header}\r\nContent-Type: application/json\r\n{extra}").encode("latin-1")

    def head(self, path: str) -> bytes:
        head = self.heads.get(path)
        if head is None:
            head = self.heads[path] = f"POST {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._common
        return head


_targets: dict = {}


def _target_for(endpoint) -> _Target:
    key = (
        endpoint.base_url,
        endpoint.tls_verify,
        endpoint.client_cert,
        tuple(endpoint.headers.items()) if endpoint.headers else (),
    )
    target = _targets.get(key)
    if target is None:
        if len(_targets) > 4096:
            _targets.clear()
        target = _targets[key] = _Target(endpoint)
    return target


class Response:
    """One answer being read: ``status`` once returned by ``request``; ``next_chunk()``/``read()`` for the body;
    then ``release()`` (back to the pool when complete) or ``close()`` (abort the connection: vLLM aborts the
    sequence)."""

    __slots__ = (
        "status",
        "complete",
        "_conn",
        "_loop",
        "_idle",
        "_parser",
        "_chunks",
        "_size",
        "_headers_done",
        "_framed",
        "_until_close",
        "_keep_alive",
        "_error",
        "_waiter",
        "_last",
        "_timer",
        "_got_bytes",
        "_done",
        "_paused",
        "_sink",
    )

    def __init__(self, conn: Connection, loop, idle: float):
        self.status = 0
        self.complete = False
        self._conn = conn
        self._loop = loop
        self._idle = idle
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._chunks: list = []
        self._size = 0
        self._headers_done = False
        self._framed = False
        self._until_close = False
        self._keep_alive = False
        self._error: BaseException | None = None
        self._waiter = None
        self._last = 0.0
        self._timer = None
        self._got_bytes = False
        self._done = False
        self._paused = False
        self._sink = None

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or name == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # it is the parser calling
        status = parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: the real one follows
            return
        self.status = status
        self._headers_done = True
        self._until_close = not self._framed and status not in (204, 304)
        self._keep_alive = parser.should_keep_alive()  # llhttp only knows it until the message completes

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._size += len(body)

    def on_message_complete(self) -> None:
        if self._headers_done:
            self.complete = True

    # fed by the connection
    def _feed(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # finished: nothing more is read for it
            return
        self._got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"invalid HTTP answer from the replica: {exc}"))
            self._conn.abort()
            return
        sink = self._sink
        if sink is not None:
            if self._chunks:
                chunks, self._chunks, self._size = self._chunks, [], 0
                self._last = self._loop.time()  # the idle watchdog's clock: the consumer never waits per chunk
                try:
                    sink(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                except Exception as exc:  # never into the event loop's protocol callback
                    self._fail(exc)
                    return
            if self.complete:
                self._wake()
            return
        if self._size > HIGH_WATER and not self._paused and not self.complete:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def relay_to(self, sink) -> None:
        """From now on hand every body byte to ``sink(data)`` as it arrives, inside the connection's read callback:
        no future, task step or coroutine per chunk. The consumer waits with ``wait()``; the sink calls ``wake()``
        when it needs the consumer (and ``pause_reading()`` when it cannot write on)."""
        self._sink = sink
        self.resume_reading()  # a pause for the buffer's high-water mark is the sink's to decide from now on
        if self._chunks:
            chunks, self._chunks, self._size = self._chunks, [], 0
            sink(b"".join(chunks))

    def wake(self) -> None:
        self._wake()

    def pause_reading(self) -> None:
        if not self._paused and not self._conn.closed:
            self._paused = True
            self._conn.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if not self._conn.closed:
                self._conn.transport.resume_reading()

    async def wait(self) -> None:
        """Wait for the sink's ``wake()``, the end of the body or a failure (raised)."""
        if not self.complete:
            await self._wait()
        elif self._error is not None:
            raise self._error

    def _lost(self, exc) -> None:
        if self.complete:
            return
        if self._until_close and exc is None:
            self.complete = True
            self._wake()
            return
        if not self._got_bytes:
            self._fail(_Stale())
        else:
            self._fail(
                UpstreamError(
                    f"the replica closed the connection mid-answer ({exc!r})"
                    if exc
                    else "the replica closed the connection mid-answer"
                )
            )

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _check(self) -> None:
        """The idle watchdog: fail when the replica sent nothing for ``idle`` seconds while we waited for it."""
        self._timer = None
        if self._done or self.complete or self._error is not None:
            return
        now = self._loop.time()
        if self._waiter is None:  # the consumer is busy (slow client), not waiting for the replica
            self._timer = self._loop.call_at(now + self._idle, self._check)
            return
        deadline = self._last + self._idle
        if now < deadline:
            self._timer = self._loop.call_at(deadline, self._check)
            return
        self._fail(TimeoutError(f"the replica sent nothing for {self._idle:g} s"))
        self._conn.abort()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        waiter = self._waiter = self._loop.create_future()
        self._last = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._last + self._idle, self._check)
        await waiter
        if self._error is not None:
            raise self._error

    async def next_chunk(self) -> bytes | None:
        """Everything of the body that arrived since the last call (waiting for at least one byte); None at its end."""
        while True:
            chunks = self._chunks
            if chunks:
                self._chunks = []
                self._size = 0
                if self._paused:
                    self._paused = False
                    self._conn.transport.resume_reading()
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if self.complete:
                return None
            await self._wait()

    async def read(self) -> bytes:
        parts = []
        while (chunk := await self.next_chunk()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    def _finish(self) -> None:
        self._done = True
        # The parser holds this response's callbacks and a relay's sink holds the response: without these cycles
        # a finished request is freed by reference counting, not left to the cyclic GC, whose pauses stall every
        # stream of the worker (bench/README.md, Gateway).
        self._parser = None
        self._sink = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool if the answer was read to its end."""
        if self._done:
            return
        self._finish()
        conn = self._conn
        if self.complete and self._error is None and not self._chunks and not self._until_close and self._keep_alive:
            conn.idle()
        else:
            conn.abort()

    def close(self) -> None:
        """Abort the request: the connection is closed (the replica sees the client go away)."""
        if self._done:
            return
        self._finish()
        self._conn.abort()


class Connection(asyncio.Protocol):
    __slots__ = ("pool", "key", "transport", "response", "closed", "idle_since")
    transport: asyncio.Transport  # set by connection_made, before the pool hands the connection out

    def __init__(self, pool: Pool, key: tuple[str, int, int | None]):
        self.pool = pool
        self.key = key
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.pool.connections.add(self)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # nothing asked: the server is not speaking our protocol
            self.abort()
            return
        response._feed(data)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost tells the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.connections.discard(self)
        response, self.response = self.response, None
        if response is not None:
            response._lost(exc)

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()

    def idle(self) -> None:
        self.response = None
        if self.closed or self.pool.closed:
            self.abort()
            return
        self.idle_since = self.pool.loop.time()
        self.pool.idle.setdefault(self.key, []).append(self)


class Pool:
    """Keep-alive connections of one event loop, per (host, port, TLS settings)."""

    def __init__(self, loop):
        self.loop = loop
        self.idle: dict = {}
        self.connections: set = set()
        self.closed = False

    async def request(self, endpoint, path: str, body: bytes, request_id: str) -> Response:
        """POST ``body`` to ``endpoint.base_url + path``; the response once its status line and headers are in."""
        target = _target_for(endpoint)
        data = b"".join(
            (
                target.head(path),
                b"X-Request-Id: ",
                request_id.encode("latin-1"),
                b"\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
                body,
            )
        )
        idle_timeout = float(settings.GATEWAY_IDLE_TIMEOUT)
        stack = self.idle.get(target.key)
        if stack:
            now = self.loop.time()
            while stack:
                conn = stack.pop()
                if conn.closed or now - conn.idle_since > KEEPALIVE_S:
                    conn.abort()
                    continue
                try:
                    return await self._send(conn, data, idle_timeout)
                except _Stale:
                    continue
        conn = await self._connect(target)
        try:
            return await self._send(conn, data, idle_timeout)
        except _Stale:
            raise UpstreamError("the replica closed the connection without answering") from None

    async def _connect(self, target: _Target) -> Connection:
        try:
            async with asyncio.timeout(float(settings.GATEWAY_CONNECT_TIMEOUT)):
                _transport, conn = await self.loop.create_connection(
                    lambda: Connection(self, target.key),
                    target.host,
                    target.port,
                    ssl=target.ssl,
                    server_hostname=target.server_hostname,
                )
        except TimeoutError:
            raise TimeoutError(f"connecting to {target.host}:{target.port} timed out") from None
        return conn

    async def _send(self, conn: Connection, data: bytes, idle_timeout: float) -> Response:
        response = conn.response = Response(conn, self.loop, idle_timeout)
        conn.transport.write(data)
        try:
            while not response._headers_done:
                await response._wait()
        except BaseException:
            response.close()
            raise
        return response

    def close(self) -> None:
        self.closed = True
        for conn in list(self.connections):
            conn.abort()
        self.connections.clear()
        self.idle.clear()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool] = weakref.WeakKeyDictionary()
# Per loop, a suspended async generator whose ``finally`` closes that loop's pool: asyncio.run, uvicorn (which runs
# on asyncio.run), asgiref's async_to_sync and pytest-asyncio all call ``loop.shutdown_asyncgens()`` before closing
# a loop, so the connections are closed while their loop can still run.
_closers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = weakref.WeakKeyDictionary()


async def _close_with_loop(pool: Pool) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        pool.close()


def pool() -> Pool:
    loop = asyncio.get_running_loop()
    current = _pools.get(loop)
    if current is None or current.closed:
        current = _pools[loop] = Pool(loop)
        closer = _close_with_loop(current)
        try:
            closer.__anext__().send(None)  # runs to the yield; the loop's asyncgen hook now tracks it
        except StopIteration:
            pass
        _closers[loop] = closer
    return current


async def request(endpoint, path: str, body: bytes, request_id: str) -> Response:
    return await pool().request(endpoint, path, body, request_id)


async def close_upstream_sessions() -> None:
    """Close this event loop's pooled upstream connections (lifespan shutdown, test fixtures)."""
    loop = asyncio.get_running_loop()
    current = _pools.pop(loop, None)
    closer = _closers.pop(loop, None)
    if closer is not None:
        await closer.aclose()
    if current is not None:
        current.close()
