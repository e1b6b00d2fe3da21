"""The /v1 HTTP edge: a raw ASGI handler in front of Django (Django's middleware stack is too slow for /v1).

``gateway_asgi(fallback)`` serves ``/v1/...`` itself and hands every other scope to ``fallback`` (Django and
Channels). Bodies above ``GATEWAY_MAX_BODY_BYTES`` get 413; every refusal is OpenAI-shaped; a client that
disconnects cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from django.conf import settings

from gateway import admission, core, errors, lookups, store, transport, waking
from gateway.errors import GatewayError
from gateway.transport import UPSTREAM_ERRORS, UpstreamResponse
from gateway.transport.http import Response as FastResponse
from gateway.transport.uvicorn import direct_cycle, relay_direct
from gateway.validation import parse
from tenancy.models import hash_api_key

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
JSON = (b"content-type", b"application/json")
NOSNIFF = (b"x-content-type-options", b"nosniff")
WAKING_COMMENT = b": waking\n\n"
SSE_HEADERS = [
    NOSNIFF,
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def _headers(extra: dict[str, Any] | None, request_id: str | None) -> list[tuple[bytes, bytes]]:
    out = []
    if request_id:
        out.append((b"x-request-id", request_id.encode()))
    for name, value in (extra or {}).items():
        out.append((name.lower().encode(), str(value).encode("latin-1")))
    return out


async def send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [JSON, NOSNIFF, *headers]})
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send, error: GatewayError, request_id: str | None = None, extra: dict[str, Any] | None = None
) -> None:
    headers = dict(extra or {})
    headers.update(error.headers)
    if error.retry_after is not None:
        headers["retry-after"] = str(error.retry_after)
    await send_json(send, error.status, orjson.dumps(error.body()), _headers(headers, request_id))


async def read_body(scope: Scope, receive: Receive) -> bytes:
    limit = settings.GATEWAY_MAX_BODY_BYTES
    too_large = GatewayError(413, f"The request body exceeds the limit of {limit} bytes.", code="request_too_large")
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                if int(value) > limit:
                    raise too_large
            except ValueError:
                raise errors.invalid_request("Invalid Content-Length header.") from None
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


async def authenticate(scope: Scope) -> lookups.KeyInfo:
    header = next((v for n, v in scope["headers"] if n == b"authorization"), None)
    if not header:
        raise GatewayError(
            401, "You didn't provide an API key. Send it as 'Authorization: Bearer sk-...'.", code="missing_api_key"
        )
    scheme, _, token = header.decode("latin-1").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith("sk-"):
        raise errors.invalid_api_key("Incorrect API key provided; expected 'Authorization: Bearer sk-...'.")
    key = await lookups.key_for(hash_api_key(token))
    if key is None or not key.active(time.time()):
        shown = token[:6] + "…" + token[-4:] if len(token) > 12 else "sk-…"
        raise errors.invalid_api_key(f"Incorrect API key provided: {shown}. The key is unknown, revoked or expired.")
    return key


class _Watch:
    """Cancels the task relaying a response when its client disconnects (one helper task per request)."""

    __slots__ = ("task", "responding", "aborted")

    def __init__(self, task: asyncio.Task[Any]):
        self.task = task
        self.responding = True
        self.aborted = False

    async def run(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if self.responding:
            self.aborted = True
            self.task.cancel()


async def list_models(key: lookups.KeyInfo) -> list[dict[str, Any]]:
    items = await lookups.models_for(key.org)
    if key.allowed_models:
        items = [m for m in items if m["id"] in key.allowed_models]
    return [
        {
            "id": m["id"],
            "object": "model",
            "created": m["created"],
            "owned_by": m["owned_by"],
            "max_model_len": m.get("context_length"),
            # An extra field (OpenAI's clients keep unknown ones): ready, starting, or idle (the first request wakes
            # it and waits for it).
            "status": m["status"],
        }
        for m in items
    ]


async def _respond(call: core.Call, send: Send, watch: _Watch) -> None:
    """Write the upstream answer to the client; a client disconnect cancels it (until the last body part)."""
    extra = _headers(call.admission.headers if call.admission else None, call.request_id)
    if not call.parsed.stream:
        try:
            body = await core.read_answer(call)
        except GatewayError as error:
            await send_error(send, error, call.request_id)
            return
        watch.responding = False
        await send_json(send, 200, body, extra)
        return
    response = call.response
    assert response is not None
    relay = core.StreamRelay(call)
    ended = False  # the client's response is complete: the piece with [DONE] went out as the last body part
    try:
        if not call.stream_started:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + extra})
        if isinstance(response, FastResponse) and (cycle := direct_cycle(send)) is not None:
            ended = await relay_direct(cycle, send, response, relay, watch)
        else:
            ended = await _relay_messages(send, response, relay, watch)
        call.upstream_ended()
    except UPSTREAM_ERRORS as exc:
        call.upstream_broke(exc)
    if not ended:
        watch.responding = False
        await send({"type": "http.response.body", "body": _stream_error(call) if call.status == "error" else b""})


async def _keep_alive(call: core.Call, send: Send, tick: int) -> None:
    """Every GATEWAY_WAKE_KEEPALIVE_S while a stream is held for its waking service: the 200 and SSE headers (the
    first time), then an SSE comment, which clients (the openai SDK among them) skip and proxies see as traffic."""
    if tick == 0:
        return  # the hold just started: a wake that is quick enough answers with its real status
    if not call.stream_started:
        call.stream_started = True
        extra = _headers(call.admission.headers if call.admission else None, call.request_id)
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + extra})
    await send({"type": "http.response.body", "body": WAKING_COMMENT, "more_body": True})


def _stream_error(call: core.Call) -> bytes:
    """The last event of a stream the replica cut (it crashed, dropped the connection or ended without [DONE]): an
    error in OpenAI's shape, so that a client does not take the partial answer for a whole one."""
    error = errors.stream_interrupted(call.parsed.model_id, call.error_code)
    return b"data: " + orjson.dumps(error.body()) + b"\n\n"


async def _relay_messages(send: Send, response: UpstreamResponse, relay: core.StreamRelay, watch: _Watch) -> bool:
    """Relay a stream as one ASGI body message per upstream read; True once the client's response is complete."""
    ended = False
    try:
        async for piece in relay.chunks(response):
            if ended:
                continue  # nothing follows [DONE]; read on only so that the connection can be reused
            if relay.finished:
                watch.responding = False
                ended = True
                await send({"type": "http.response.body", "body": piece})
            else:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
    except UPSTREAM_ERRORS:
        if not ended:
            raise
        # the answer is whole; only the connection is lost (release() drops it)
    return ended


async def serve_generation(scope: Scope, receive: Receive, send: Send, endpoint: str, key: lookups.KeyInfo) -> None:
    data = None
    try:
        body = await read_body(scope, receive)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise errors.invalid_request(
                f"We could not parse the JSON body of your request: {exc}.", None, "invalid_json"
            ) from None
        parsed = parse(endpoint, data)
    except asyncio.CancelledError:
        return
    except GatewayError as error:  # refused for its body (too large, not JSON, invalid): still one usage record
        call = core.rejected_call(endpoint, data, key.org, key, error)
        await send_error(send, error, call.request_id)
        await call.finish()
        return
    call = core.Call(endpoint=endpoint, body=data, parsed=parsed, org=key.org, key=key, source="api")
    call.receive = receive  # read only while the call is held for a waking service (gateway.waking)
    if parsed.stream and settings.GATEWAY_WAKE_KEEPALIVE_S:
        call.on_hold = functools.partial(_keep_alive, call, send)
    try:
        await core.start(call)
    except GatewayError as error:
        if call.stream_started:  # held with keep-alive comments: the 200 went out, the error is the stream's end
            await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(error.body()) + b"\n\n"})
        else:
            await send_error(send, error, call.request_id, call.admission.headers if call.admission else None)
        await call.finish()
        return
    except waking.ClientGone:
        call.client_gone()
        await call.finish()
        return
    current = asyncio.current_task()
    assert current is not None
    watch = _Watch(current)
    watcher = asyncio.get_running_loop().create_task(watch.run(receive))
    try:
        await _respond(call, send, watch)
    except asyncio.CancelledError:
        if not watch.aborted:
            raise  # the server is shutting down
        current.uncancel()
    finally:
        watch.responding = False
        watcher.cancel()
        if watch.aborted:
            call.client_gone()
        await call.finish()


async def handle(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    if len(path) > 4 and path.endswith("/"):
        path = path[:-1]
    method = scope["method"]
    try:
        endpoint = ENDPOINTS.get(path)
        if endpoint is not None:
            if method != "POST":
                raise GatewayError(
                    405, f"Method {method} is not allowed on {path}; use POST.", code="method_not_allowed"
                )
            key = await authenticate(scope)
            await serve_generation(scope, receive, send, endpoint, key)
            return
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                raise GatewayError(
                    405, f"Method {method} is not allowed on {path}; use GET.", code="method_not_allowed"
                )
            key = await authenticate(scope)
            items = await list_models(key)
            if path == "/v1/models":
                await send_json(send, 200, orjson.dumps({"object": "list", "data": items}), [])
                return
            wanted = path[len("/v1/models/") :]
            found = next((m for m in items if m["id"] == wanted), None)
            if found is None:
                raise errors.model_not_found(wanted)
            await send_json(send, 200, orjson.dumps(found), [])
            return
        raise GatewayError(404, f"Unknown endpoint {method} {path}.", code="unknown_url")
    except GatewayError as error:
        await send_error(send, error)
    except store.REDIS_ERRORS as exc:
        await send_error(send, store.redis_unavailable(exc))
    except Exception:
        logger.exception("gateway failure on %s %s", method, path)
        try:
            await send_error(
                send,
                GatewayError(
                    500, "The gateway failed to handle the request.", type="server_error", code="internal_error"
                ),
            )
        except Exception:  # the response had already started
            pass


def gateway_asgi(fallback: ASGIApp) -> ASGIApp:
    """An ASGI app serving /v1 itself and everything else (console, /api, websockets) through ``fallback``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and (scope["path"] == "/v1" or scope["path"].startswith("/v1/")):
            await handle(scope, receive, send)
        elif kind == "lifespan":
            await lifespan(receive, send)
        else:
            await fallback(scope, receive, send)

    return app


def freeze_heap() -> None:
    """Move everything loaded at startup (Django, the app registry, ~100k objects) out of the cyclic GC's reach.

    A full collection of that heap takes 10-40 ms, during which no stream of this worker moves; frozen, a
    collection only walks what requests allocated since (well under 1 ms). See bench/README.md, Gateway.
    """
    gc.collect()
    gc.freeze()


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            transport.announce()
            freeze_heap()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            admission.stop_heartbeat()
            try:
                await admission.give_back_slices()
            except Exception as exc:  # Redis away: the slices expire like any hold
                logger.warning("could not give back balance slices: %r", exc)
            await transport.close_upstream_sessions()
            await send({"type": "lifespan.shutdown.complete"})
            return
