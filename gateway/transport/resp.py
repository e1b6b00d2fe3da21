"""The hot path's Redis client: one pipelined RESP connection per event loop (the fast path's :class:`RedisClient`).

Each command is written at once and replies are matched in order (hiredis parses them), instead of a pool
checkout, a retry wrapper and a reply parser per command in redis-py's asyncio client. Commands that no client
waits on (settlement with the usage record) are written ``later``: at the end of the loop iteration, in one write
with the others queued meanwhile, so streams that end together cost one write and one wake-up of Redis.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any, cast

import hiredis
import redis
from redis.asyncio.connection import parse_url


def _reply_error(message: str) -> redis.exceptions.ResponseError:
    if message.startswith("NOSCRIPT"):
        return redis.exceptions.NoScriptError(message)
    return redis.exceptions.ResponseError(message)


_SKIP_REPLY = hiredis.pack_command(("CLIENT", "REPLY", "SKIP"))  # type: ignore[arg-type]  # the stub types a 1-tuple


def _forget(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: nobody waits on a fired command


PIGGYBACK_S = 0.05  # the longest a piggybacked command waits for another command's write


class _Protocol(asyncio.Protocol):
    transport: asyncio.Transport  # set by connection_made, before the protocol is handed out

    def __init__(self, client: FastRedis):
        self.client = client
        self.reader = hiredis.Reader()
        self.queued: list[bytes] = []
        self.soon = False  # a flush is scheduled for the end of this loop iteration
        self.timer: asyncio.TimerHandle | None = None  # a flush for piggybacked commands

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def write(self, data: bytes) -> None:
        """Send a command now: deferring it to coalesce with others costs the caller a loop iteration, and under
        load an iteration is a burst of other streams' chunks (see bench/README.md, Gateway). Commands queued by
        ``later`` go out first, in order."""
        if self.queued:
            self.queued.append(data)
            self.flush()
        elif not self.transport.is_closing():
            self.transport.write(data)

    def later(self, data: bytes) -> None:
        """Send a command at the end of this loop iteration, in one write with the others queued meanwhile (for
        commands nobody waits on to answer a client: settlement and usage records)."""
        if not self.soon:
            self.soon = True
            asyncio.get_running_loop().call_soon(self.flush)
        self.queued.append(data)

    def piggyback(self, data: bytes) -> None:
        """Send a command with the next one written (in order), and after ``PIGGYBACK_S`` at the latest: for
        commands not worth a write of their own (a serving signal of a request that makes no round trip)."""
        self.queued.append(data)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(PIGGYBACK_S, self._timed_flush)

    def _timed_flush(self) -> None:
        self.timer = None
        self.flush()

    def flush(self) -> None:
        self.soon = False
        if self.queued:
            data = b"".join(self.queued)
            self.queued.clear()
            if not self.transport.is_closing():
                self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.client.pending
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.transport.close()
                self.client.lost(redis.exceptions.ConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            future = pending.popleft()
            if future.done():  # its caller was cancelled; the reply is dropped in order
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(_reply_error(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(redis.exceptions.ConnectionError(f"Connection to Redis lost: {exc or 'closed'}"), self)


class FastRedis:
    """One pipelined Redis connection for one event loop (replies come back in command order).

    A broken connection fails the commands waiting on it with ``redis.exceptions.ConnectionError``; the next
    command reconnects. Replies are raw as in redis-py without ``decode_responses`` (bytes, ints, lists, None).
    """

    def __init__(self, url: str):
        self.url = url
        self.options = parse_url(url)
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.protocol: _Protocol | None = None
        self.connecting: asyncio.Future[None] | None = None

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        options = self.options
        try:
            if options.get("path"):
                _transport, protocol = await loop.create_unix_connection(lambda: _Protocol(self), options["path"])
            else:
                tls = ssl.create_default_context() if self.url.startswith("rediss:") else None
                _transport, protocol = await loop.create_connection(
                    lambda: _Protocol(self), options.get("host", "localhost"), int(options.get("port", 6379)), ssl=tls
                )
        except OSError as exc:
            raise redis.exceptions.ConnectionError(f"Cannot connect to Redis: {exc}") from exc
        setup = []
        if options.get("password"):
            auth = [options["username"], options["password"]] if options.get("username") else [options["password"]]
            setup.append(self._send(protocol, "AUTH", *auth))
        if int(options.get("db") or 0):
            setup.append(self._send(protocol, "SELECT", int(options["db"])))
        self.protocol = protocol
        try:
            for future in setup:
                await future
        except BaseException:
            protocol.transport.close()
            raise

    def _send(self, protocol: _Protocol, *args: Any, later: bool = False) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        if later:
            protocol.later(hiredis.pack_command(args))
        else:
            protocol.write(hiredis.pack_command(args))
        return future

    def fire(self, *args: Any) -> None:
        """Send a command nobody waits on, at the end of this loop iteration in one write with the others queued
        meanwhile (as ``later``), preceded by ``CLIENT REPLY SKIP``: Redis sends no reply, so there is none to read."""
        protocol = self.protocol
        if protocol is None or protocol.transport.is_closing():
            asyncio.ensure_future(self.execute(*args)).add_done_callback(_forget)
            return
        protocol.later(_SKIP_REPLY + hiredis.pack_command(args))

    def piggyback(self, *args: Any) -> None:
        """As ``fire``, but written with the next command this loop writes (``_Protocol.piggyback``)."""
        protocol = self.protocol
        if protocol is None or protocol.transport.is_closing():
            asyncio.ensure_future(self.execute(*args)).add_done_callback(_forget)
            return
        protocol.piggyback(_SKIP_REPLY + hiredis.pack_command(args))

    def lost(self, error: Exception, protocol: _Protocol | None = None) -> None:
        if protocol is not None and protocol is not self.protocol:
            return
        self.protocol = None
        pending, self.pending = self.pending, collections.deque()
        for future in pending:
            if not future.done():
                future.set_exception(error)

    async def execute(self, *args: Any, later: bool = False) -> Any:
        """Run a command; with ``later`` it is written at the end of this loop iteration together with others."""
        protocol = self.protocol
        if protocol is None or protocol.transport.is_closing():
            if self.connecting is None:
                self.connecting = asyncio.ensure_future(self._connect())
                self.connecting.add_done_callback(self._connected)
            await asyncio.shield(self.connecting)
            protocol = self.protocol
            if protocol is None:
                raise redis.exceptions.ConnectionError("Connection to Redis lost")
        return await self._send(protocol, *args, later=later)

    def _connected(self, task: asyncio.Future[None]) -> None:
        self.connecting = None
        if not task.cancelled():
            task.exception()  # retrieved: the waiting callers raise it

    async def close(self) -> None:
        if self.protocol is not None:
            self.protocol.transport.close()
            self.protocol = None
