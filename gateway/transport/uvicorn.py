"""The fast stream relay: a stream's middle chunks written from the replica's read callback to uvicorn's transport.

That is what uvicorn's own ``send`` would write for them (a chunked-encoding frame each); skipping it, and the
task step per chunk that awaiting it costs, roughly halves the gateway's CPU per token (bench/README.md,
Gateway). The response start and its last part still go through ``send``, so uvicorn's state (keep-alive,
completion) is its own. It relies on uvicorn's private ``RequestResponseCycle`` of the httptools protocol
(``transport``, ``flow.write_paused``, ``chunked_encoding``, ``response_complete``), as of uvicorn
``WRITTEN_AGAINST``: any other server or protocol (h11) gets plain ASGI ``send``, and so does a uvicorn whose
cycle lacks one of those attributes, with one WARNING per process instead of a crash.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any, Protocol

from gateway.transport import UPSTREAM_ERRORS
from gateway.transport.http import Response

logger = logging.getLogger(__name__)

WRITTEN_AGAINST = "0.54.0"
CYCLE_MODULE = "uvicorn.protocols.http.httptools_impl"


class Relay(Protocol):
    """What the client sees of the upstream bytes (``gateway.core.StreamRelay``)."""

    finished: bool

    def feed(self, data: bytes) -> bytes | None: ...

    def tail(self) -> bytes | None: ...


class Watch(Protocol):
    """The client-disconnect watch: a disconnect no longer cancels once ``responding`` is False."""

    responding: bool


def installed_version() -> str:
    try:
        return metadata.version("uvicorn")
    except metadata.PackageNotFoundError:
        return "none"


_warned = False


def _warn_once(exc: AttributeError) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "uvicorn %s's response cycle is not what the direct stream relay was written against (uvicorn %s): "
            "%s; streams use plain ASGI send",
            installed_version(),
            WRITTEN_AGAINST,
            exc,
        )


def direct_cycle(send: Any) -> Any | None:
    """uvicorn's response cycle behind ``send`` when a stream's middle chunks may be written to its transport;
    None for plain ASGI ``send``."""
    cycle: Any = getattr(send, "__self__", None)
    if type(cycle).__module__ != CYCLE_MODULE:
        return None
    try:
        if cycle.chunked_encoding is not True or cycle.response_complete or cycle.transport is None:
            return None
        cycle.flow.write_paused  # noqa: B018  (present: the flow control we must respect)
    except AttributeError as exc:
        _warn_once(exc)
        return None
    return cycle


async def relay_direct(cycle: Any, send: Any, response: Response, relay: Relay, watch: Watch) -> bool:
    """Relay a stream from the replica's read callback straight to the client's transport; True once the client's
    response is complete (the piece with [DONE] went out as its last part)."""
    transport, flow = cycle.transport, cycle.flow
    final: list[bytes] = []
    backlog: list[bytes] = []  # pieces held while the client's socket buffer is full (a slow reader)

    def sink(data: bytes) -> None:
        if final:
            return  # nothing follows [DONE]; the rest is read only so that the connection can be reused
        piece = relay.feed(data)
        if piece is None:
            return
        if relay.finished:
            final.append(piece)
            response.wake()
        elif backlog or flow.write_paused:
            backlog.append(piece)
            response.pause_reading()
            response.wake()
        elif not transport.is_closing():  # else the client is gone and the watch cancels this request
            transport.write(b"%x\r\n%b\r\n" % (len(piece), piece))

    response.relay_to(sink)
    while not final and not response.complete:
        await response.wait()
        if backlog:
            pieces = b"".join(backlog)
            backlog.clear()
            await send({"type": "http.response.body", "body": pieces, "more_body": True})  # waits for the drain
            response.resume_reading()
    if not final and (piece := relay.tail()) is not None:
        (final if relay.finished else backlog).append(piece)
    if backlog:
        await send({"type": "http.response.body", "body": b"".join(backlog), "more_body": True})
    if not final:
        return False
    watch.responding = False
    await send({"type": "http.response.body", "body": final[0]})
    try:
        while not response.complete:
            await response.wait()
    except UPSTREAM_ERRORS:
        pass  # the answer is whole; only the connection is lost (release() drops it)
    return True
