"""The /v1 HTTP edge: a raw ASGI handler in front of Django (Django's middleware stack is too slow for /v1).

``gateway_asgi(fallback)`` serves ``/v1/...`` itself and hands every other scope to ``fallback`` (Django and
Channels). Bodies above ``GATEWAY_MAX_BODY_BYTES`` get 413; every refusal is OpenAI-shaped; a client that
disconnects cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import orjson
from django.conf import settings

from gateway import admission, core, errors, lookups
from gateway.errors import GatewayError
from gateway.validation import parse
from tenancy.models import hash_api_key

logger = logging.getLogger(__name__)

ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
JSON = (b"content-type", b"application/json")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def _headers(extra: dict | None, request_id: str | None) -> list:
    out = []
    if request_id:
        out.append((b"x-request-id", request_id.encode()))
    for name, value in (extra or {}).items():
        out.append((name.lower().encode(), str(value).encode("latin-1")))
    return out


async def send_json(send, status: int, body: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [JSON, *headers]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send, error: GatewayError, request_id: str | None = None, extra: dict | None = None) -> None:
    headers = dict(extra or {})
    headers.update(error.headers)
    if error.retry_after is not None:
        headers["retry-after"] = str(error.retry_after)
    await send_json(send, error.status, orjson.dumps(error.body()), _headers(headers, request_id))


async def read_body(scope, receive) -> bytes:
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


async def authenticate(scope) -> lookups.KeyInfo:
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

    def __init__(self, task):
        self.task = task
        self.responding = True
        self.aborted = False

    async def run(self, receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if self.responding:
            self.aborted = True
            self.task.cancel()


async def list_models(key: lookups.KeyInfo) -> list[dict]:
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
        }
        for m in items
    ]


async def _respond(call: core.Call, response, send, watch: _Watch) -> None:
    """Relay the upstream answer to the client; a client disconnect cancels it (until the last body part)."""
    extra = _headers(call.admission.headers if call.admission else None, call.request_id)
    if response.status >= 400:
        raw = await response.read()
        response.release()
        core.done_with_replica(call, healthy=True)
        error = core.upstream_error(call, response.status, raw)
        call.fail(error)
        await send_error(send, error, call.request_id, call.admission.headers if call.admission else None)
        return
    if not call.parsed.stream:
        healthy = None
        try:
            raw = await response.read()
            call.mark_first_byte()
            body = core.read_complete(call, raw)
            healthy = True
        except (*core.UPSTREAM_ERRORS, orjson.JSONDecodeError) as exc:
            healthy = False
            logger.warning("answer %s from %s broke: %r", call.request_id, call.replica.replica, exc)
            error = errors.upstream_failed(call.parsed.model_id)
            call.fail(error)
            await send_error(send, error, call.request_id)
            return
        finally:
            response.release() if healthy else response.close()
            core.done_with_replica(call, healthy=healthy)
        watch.responding = False
        await send_json(send, 200, body, extra)
        return
    relay = core.StreamRelay(call)
    healthy = None
    ended = False  # the client's response is complete: the piece with [DONE] went out as the last body part
    try:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + extra})
        cycle = _direct_cycle(send)
        if cycle is not None:
            ended = await _relay_direct(cycle, send, response, relay, watch)
        else:
            ended = await _relay_messages(send, response, relay, watch)
        healthy = relay.finished
        if not relay.finished:
            call.status, call.http_status, call.error_code = "error", 502, "upstream_incomplete"
        if not ended:
            watch.responding = False
            ended = True
            await send({"type": "http.response.body", "body": b""})
    except core.UPSTREAM_ERRORS as exc:
        logger.warning("stream %s from %s broke: %r", call.request_id, call.replica.replica, exc)
        healthy = False
        if not ended:
            call.status, call.http_status, call.error_code = "error", 502, "upstream_disconnected"
            await send({"type": "http.response.body", "body": b""})
    finally:
        response.release() if relay.finished else response.close()
        core.done_with_replica(call, healthy=healthy)


async def _relay_messages(send, response, relay: core.StreamRelay, watch: _Watch) -> bool:
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
    except core.UPSTREAM_ERRORS:
        if not ended:
            raise
        # the answer is whole; only the connection is lost (release() drops it)
    return ended


def _direct_cycle(send):
    """uvicorn's response cycle behind ``send`` when a stream's middle chunks may be written to its transport.

    That is what uvicorn's own ``send`` would write for them (a chunked-encoding frame each); skipping it, and the
    task step per chunk that awaiting it costs, roughly halves the gateway's CPU per token (bench/README.md,
    Gateway). The response start and its last part still go through ``send``, so uvicorn's state (keep-alive,
    completion) is its own. Any other server, or a uvicorn whose cycle does not look as expected, gets the plain
    ASGI path.
    """
    cycle = getattr(send, "__self__", None)
    if type(cycle).__module__ != "uvicorn.protocols.http.httptools_impl":
        return None
    try:
        if cycle.chunked_encoding is not True or cycle.response_complete or cycle.transport is None:
            return None
        cycle.flow.write_paused  # noqa: B018  (present: the flow control we must respect)
    except AttributeError:
        return None
    return cycle


async def _relay_direct(cycle, send, response, relay: core.StreamRelay, watch: _Watch) -> bool:
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
    except core.UPSTREAM_ERRORS:
        pass  # the answer is whole; only the connection is lost (release() drops it)
    return True


async def serve_generation(scope, receive, send, endpoint: str, key: lookups.KeyInfo) -> None:
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
        await core.finalize_soon(call)
        return
    call = core.Call(endpoint=endpoint, body=data, parsed=parsed, org=key.org, key=key, source="api")
    try:
        endpoints = await core.prepare(call)
        response = await core.open_upstream(call, endpoints)
    except GatewayError as error:
        call.fail(error)
        await send_error(send, error, call.request_id, call.admission.headers if call.admission else None)
        await core.finalize(call)
        return
    current = asyncio.current_task()
    watch = _Watch(current)
    watcher = asyncio.get_running_loop().create_task(watch.run(receive))
    try:
        await _respond(call, response, send, watch)
    except asyncio.CancelledError:
        if not watch.aborted:
            raise  # the server is shutting down
        current.uncancel()
    finally:
        watch.responding = False
        watcher.cancel()
        if watch.aborted:
            call.status, call.http_status = "aborted", 499
        await core.finalize_soon(call)


async def handle(scope, receive, send) -> None:
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


def gateway_asgi(fallback):
    """An ASGI app serving /v1 itself and everything else (console, /api, websockets) through ``fallback``."""

    async def app(scope, receive, send):
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


async def lifespan(receive, send) -> None:
    from gateway.transport.http import close_upstream_sessions

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            freeze_heap()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await admission.give_back_slices()
            except Exception as exc:  # Redis away: the slices expire like any hold
                logger.warning("could not give back balance slices: %r", exc)
            await close_upstream_sessions()
            await send({"type": "lifespan.shutdown.complete"})
            return
