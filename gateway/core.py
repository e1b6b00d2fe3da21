"""The gateway's core, shared by the /v1 HTTP edge (gateway.asgi) and the playground (``chat_stream``).

One request goes: resolve the model (cached deployments selectors) → check the key's allow-list → admission (rate
limits and the worst-case cost reserved in one Redis script) → route to a Ready replica (retrying another one on
connect errors and 5xx before the first byte) → relay the answer with the client's model id → settle the
reservation to the real usage and queue one usage record. Usage always comes from the upstream: streams ask for it
(``stream_options.include_usage``) even when the client did not, and that chunk is removed from what such a client
sees. A request cancelled mid-stream closes the upstream connection (vLLM aborts the sequence) and is recorded as
aborted with the tokens already streamed.

A request's life cycle has one owner, its :class:`Call`: the edges (gateway.asgi, ``chat_stream`` for the
playground) write bytes and report what happened (``upstream_ended``, ``upstream_broke``, ``client_gone``); the
call derives the final status triple, and ``finish()`` (idempotent) releases or closes the upstream answer,
writes the replica's health once and settles with one usage record.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings

from billing.pricing import token_amount
from catalog.models import ModelKind
from deployments.selectors import Endpoint
from gateway import admission, errors, lookups, serving, store, transport, usage, waking
from gateway.admission import Admission
from gateway.errors import GatewayError
from gateway.lookups import KeyInfo, OrgInfo, Target
from gateway.router import affinity_key, router
from gateway.transport import UPSTREAM_ERRORS, UpstreamResponse
from gateway.validation import Parsed, estimate_prompt_tokens, parse, typical_prompt_tokens

logger = logging.getLogger(__name__)

PATHS = {"chat.completions": "/v1/chat/completions", "completions": "/v1/completions", "embeddings": "/v1/embeddings"}
# The model kind (catalog.models.ModelKind, carried by the cached target) each endpoint needs.
ENDPOINT_KINDS = {
    "chat.completions": ModelKind.CHAT,
    "completions": ModelKind.CHAT,
    "embeddings": ModelKind.EMBEDDING,
}
__all__ = ["UPSTREAM_ERRORS", "Call", "StreamRelay", "chat_stream", "rejected_call", "start"]


@dataclass(eq=False)
class Call:
    """One request on its way through the gateway, and what will be recorded about it."""

    endpoint: str
    body: dict
    parsed: Parsed
    org: OrgInfo
    key: KeyInfo | None = None
    user_id: int | None = None
    source: str = "api"
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    target: Target | None = None
    admission: Admission | None = None
    replica: Endpoint | None = None
    response: UpstreamResponse | None = None  # the replica's answer until finish() releases or closes it
    relay: StreamRelay | None = None  # set while a stream is relayed
    healthy: bool | None = None  # what this call says about its replica (None: nothing, e.g. the client left)
    ttft_ms: int | None = None
    latency_ms: int = 0
    usage: dict | None = None
    streamed_tokens: int = 0
    progress_next: int = 1  # streamed_tokens at which the open marker's progress is written next
    prompt_estimate: int = 0
    reserved_completion: int = 0  # the completion tokens admission reserved for
    status: str = "ok"
    http_status: int = 200
    error_code: str = ""
    served_version: str = ""
    cost: Decimal | None = None
    finalized: bool = False
    upstream_closed: bool = False
    finishing: asyncio.Future[None] | None = None
    counted: serving.Counted | None = None  # the call's count in its service's serving signals, until taken back
    # While held for a waking service (gateway.waking): called with 0 when the hold starts, then with 1, 2, ... every
    # GATEWAY_WAKE_KEEPALIVE_S; ``receive`` (the ASGI edge's) tells a held request that its client left.
    on_hold: Callable[[int], Awaitable[None]] | None = None
    receive: Callable[[], Awaitable[dict]] | None = None
    stream_started: bool = False  # a held stream's 200 and SSE headers went out already (its keep-alive comments)

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.t0) * 1000)

    def mark_first_byte(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = self.elapsed_ms()

    def uncount(self) -> None:
        """Take the call back out of its service's in-flight requests (once), with a stream's TTFT as a sample."""
        counted, self.counted = self.counted, None
        if counted is not None:
            serving.left(counted, self.ttft_ms if self.parsed.stream and self.status == "ok" else None)

    def fail(self, error: GatewayError) -> None:
        self.status = "error"
        self.http_status = error.status
        self.error_code = str(error.code or error.type or "")[:64]

    def upstream_ended(self) -> None:
        """The replica's answer ended without a transport error: healthy if whole, else recorded as cut short."""
        relay = self.relay
        if relay is None or relay.finished:
            self.healthy = True
        else:
            self.healthy = False
            self.status, self.http_status, self.error_code = "error", 502, "upstream_incomplete"

    def upstream_broke(self, exc: BaseException) -> None:
        """The replica's connection failed mid-stream (a dropped connection, the idle timeout)."""
        logger.warning("stream %s from %s broke: %r", self.request_id, self.replica_name(), exc)
        self.healthy = False
        self.status, self.http_status, self.error_code = "error", 502, "upstream_disconnected"

    def client_gone(self) -> None:
        """The client went away before its response was complete."""
        self.status, self.http_status = "aborted", 499

    def replica_name(self) -> str:
        return self.replica.replica if self.replica is not None else ""

    def progress(self) -> None:
        """Write what the sweeper bills if this worker dies now (``metering.open_requests``): the tokens relayed
        so far plus the marker interval, as the client may receive up to that many before the next write. Not
        waited on: written with the other Redis commands of this loop iteration."""
        step = settings.GATEWAY_PROGRESS_TOKENS
        streamed = self.streamed_tokens
        self.progress_next = streamed + step
        target, marked = self.target, self.admission
        if marked is None or not marked.marked or target is None:
            return
        billed = max(min(streamed + step, self.reserved_completion), streamed)
        price = target.price_at(self.started_at) if target.public else None
        cost = (
            token_amount(price, prompt_tokens=self.prompt_estimate, completion_tokens=billed)
            if price is not None
            else None
        )
        payload = {
            "t": billed,
            "cost": str(cost) if cost is not None else None,
            "r": self.replica_name(),
            "ttft": self.ttft_ms,
            "at": time.time(),
        }
        admission.progress(marked, orjson.dumps(payload))

    def close_upstream(self) -> None:
        """Release the replica's answer (read whole: the connection is reused) or close it (the replica aborts the
        sequence), and write the replica's health: once, however often it is called."""
        if self.upstream_closed:
            return
        self.upstream_closed = True
        response, self.response = self.response, None
        if response is not None:
            if self.healthy or (self.relay is not None and self.relay.finished):
                response.release()
            else:
                response.close()
        replica = self.replica
        if replica is not None:
            router.finished(replica)
            if self.healthy is True:
                router.succeeded(replica)
            elif self.healthy is False:
                router.failed(replica)

    def finish(self) -> asyncio.Future[None]:
        """End the life cycle: the upstream closed (``close_upstream``), then the reservation settled and the usage
        record queued, once. Awaitable; the settlement completes even if the awaiting task is being cancelled."""
        if self.finishing is None:
            self.close_upstream()
            self.finishing = asyncio.ensure_future(_finalize(self))
        return asyncio.shield(self.finishing)


def rejected_call(endpoint: str, data, org: OrgInfo, key: KeyInfo | None, error: GatewayError) -> Call:
    """A call refused for its body before it was parsed, to be recorded: the model as named, if it was a string."""
    named = data.get("model") if isinstance(data, dict) else None
    parsed = Parsed(
        model_id=named[:200] if isinstance(named, str) else "",
        stream=isinstance(data, dict) and data.get("stream") is True,
        client_usage=False,
        prompt_text="",
        max_tokens=None,
        n=1,
        params={},
    )
    call = Call(endpoint=endpoint, body={}, parsed=parsed, org=org, key=key, source="api")
    call.fail(error)
    return call


async def prepare(call: Call) -> list:
    """Resolve, authorise and admit the call; the Ready endpoints to try. Raises GatewayError."""
    parsed = call.parsed
    target = await lookups.target_for(parsed.model_id, call.org)
    if target is None:
        raise errors.model_not_found(parsed.model_id)
    if call.key is not None and call.key.allowed_models and parsed.model_id not in call.key.allowed_models:
        raise errors.model_not_allowed(parsed.model_id)
    if ENDPOINT_KINDS[call.endpoint] != target.kind:  # refused before admission: nothing reserved, nothing billed
        raise errors.model_not_supported(parsed.model_id, kind=target.kind, endpoint=call.endpoint)
    if parsed.max_tokens is not None and parsed.max_tokens >= target.context_length:
        param = "max_completion_tokens" if call.body.get("max_completion_tokens") else "max_tokens"
        raise errors.max_tokens_too_large(
            parsed.model_id, param=param, requested=parsed.max_tokens, context_length=target.context_length
        )
    call.target = target
    typical = typical_prompt_tokens(parsed.prompt_text)
    if call.endpoint == "embeddings":
        completion = 0
    else:
        room = max(1, target.context_length - typical)
        completion = (parsed.max_tokens or min(settings.GATEWAY_RESERVE_MAX_TOKENS, room)) * parsed.n
    call.prompt_estimate, call.reserved_completion = typical, completion
    price = target.price_at(call.started_at) if target.public else None
    if len(target.service_ids) == 1:  # counted now, so that the count goes out in the admission's own write
        call.counted = serving.arrived(target.service_ids[0])
    try:
        call.admission = await _admit(call, target, price)
    except BaseException:
        call.uncount()
        raise
    if store.outage_since is not None:
        store.redis_back()
    try:
        endpoints = await lookups.endpoints_for(target.service_ids)
    except Exception:
        await admission.release(call.admission)
        raise
    if not endpoints:
        if target.wake_service_id is None or target.max_wake_wait_s <= 0:
            raise errors.no_ready_replica(parsed.model_id)
        endpoints = await waking.hold(call, target)  # the service wakes (or starts): wait for a ready replica
    return endpoints


def _admit(call: Call, target: Target, price) -> Coroutine[Any, Any, Admission]:
    """The admission of ``call`` (a coroutine, so ``prepare`` can wrap it without another frame)."""
    parsed = call.parsed
    typical, completion = call.prompt_estimate, call.reserved_completion
    return admission.admit(
        request_id=call.request_id,
        org_id=call.org.id,
        key=call.key,
        est_tokens=typical + (parsed.max_tokens or 0) * parsed.n,
        price=price,
        reserve_tokens=(estimate_prompt_tokens(parsed.prompt_text), completion),
        marker={
            "id": call.request_id,
            "org_id": call.org.id,
            "api_key_id": call.key.id if call.key else None,
            "user_id": call.user_id,
            "source": call.source,
            "endpoint": call.endpoint,
            "model_id": parsed.model_id,
            "catalog_model_id": target.catalog_model_id,
            "service_id": target.service_ids[0] if len(target.service_ids) == 1 else None,
            "public": target.public,
            "stream": parsed.stream,
            "started_at": call.started_at,
            "prompt_tokens": typical,
            "currency": price.currency if price is not None else "",
        },
    )


def upstream_payload(call: Call) -> bytes:
    assert call.target is not None
    body = dict(call.body)
    body["model"] = call.target.upstream_model
    if call.parsed.stream:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    return orjson.dumps(body)


async def start(call: Call) -> None:
    """Resolve, admit and route the call until a replica answers with a success status (``call.response``).

    Raises GatewayError (the call's status set): refused, no replica could answer, or the replica's 4xx (read and
    released here, naming the client's model)."""
    try:
        endpoints = await prepare(call)
        try:
            await open_upstream(call, endpoints)
        except GatewayError as error:
            await _wake_instead(call, error)
        response = call.response
        assert response is not None
        if response.status >= 400:
            try:
                raw = await response.read()
            except UPSTREAM_ERRORS as exc:
                logger.warning("error answer %s from %s broke: %r", call.request_id, call.replica_name(), exc)
                call.healthy = False
                raise errors.upstream_failed(call.parsed.model_id) from None
            call.healthy = True
            raise upstream_error(call, response.status, raw)
    except GatewayError as error:
        call.fail(error)
        call.close_upstream()
        raise
    except BaseException:  # cancelled, or Redis or the database failed: the replica's answer is not left open
        call.close_upstream()
        call.uncount()  # no finish() follows such a failure
        raise


async def _wake_instead(call: Call, error: GatewayError) -> None:
    """No replica of a list that may be stale answered: for a service that wakes on request, look again and wait.

    The cached replica list is served while it is refreshed after a change (``lookups.TTLCache``), so the first
    request after a service scaled to zero is routed to the instance that was stopped; refused, it would be answered
    503 instead of waking the service. Only a refusal of every replica (``no_ready_replica``) of such a service gets
    here; anything else is raised as it was.
    """
    target = call.target
    if error.code != "no_ready_replica" or target is None or target.wake_service_id is None:
        raise error
    if target.max_wake_wait_s <= 0:
        raise error
    endpoints = await lookups.endpoints.reload(target.service_ids)
    if not endpoints:
        endpoints = await waking.hold(call, target)
    await open_upstream(call, endpoints)


async def open_upstream(call: Call, endpoints: list[Endpoint]) -> None:
    """POST to a replica, trying others on connect errors and 5xx; ``call.response`` (status < 500) with headers
    read."""
    payload = upstream_payload(call)
    path = PATHS[call.endpoint]
    affinity = affinity_key(call.parsed.prompt_text)
    tried: set[str] = set()
    for _attempt in range(settings.GATEWAY_MAX_ATTEMPTS):
        endpoint = router.choose(endpoints, affinity=affinity, prompt_chars=len(call.parsed.prompt_text), exclude=tried)
        if endpoint is None:
            break
        tried.add(endpoint.base_url)
        if call.counted is None and endpoint.service_id:  # a model of several services: counted where it goes
            call.counted = serving.arrived(endpoint.service_id)
        router.started(endpoint)
        try:
            response = await transport.request(endpoint, path, payload, call.request_id)
        except UPSTREAM_ERRORS as exc:
            logger.warning("replica %s failed for %s: %r", endpoint.replica, call.request_id, exc)
            router.finished(endpoint)
            router.failed(endpoint)
            continue
        except BaseException:
            router.finished(endpoint)
            raise
        if response.status >= 500:
            logger.warning("replica %s answered %s for %s", endpoint.replica, response.status, call.request_id)
            response.close()
            router.finished(endpoint)
            router.failed(endpoint)
            continue
        call.replica, call.response = endpoint, response
        return
    if not tried:
        raise errors.no_ready_replica(call.parsed.model_id, retry_after=router.retry_after(endpoints))
    raise errors.GatewayError(
        503,
        f"No replica of `{call.parsed.model_id}` could answer ({len(tried)} tried); retry shortly.",
        type="server_error",
        code="no_ready_replica",
        retry_after=2,
    )


async def read_answer(call: Call) -> bytes:
    """The whole non-streamed answer as the client sees it (its model id); the upstream closed. Raises
    GatewayError (502, the call's status set) when the replica's answer breaks or is not JSON."""
    response = call.response
    assert response is not None
    try:
        raw = await response.read()
        call.mark_first_byte()
        body = read_complete(call, raw)
    except (*UPSTREAM_ERRORS, orjson.JSONDecodeError) as exc:
        logger.warning("answer %s from %s broke: %r", call.request_id, call.replica_name(), exc)
        call.healthy = False
        call.close_upstream()
        error = errors.upstream_failed(call.parsed.model_id)
        call.fail(error)
        raise error from None
    call.healthy = True
    call.close_upstream()
    return body


def upstream_error(call: Call, status: int, raw: bytes) -> GatewayError:
    """An upstream 4xx (e.g. the prompt exceeds the context) in OpenAI's shape, naming the client's model."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = {}
    inner = data.get("error") if isinstance(data, dict) and isinstance(data.get("error"), dict) else data
    if not isinstance(inner, dict):
        inner = {}
    message = str(inner.get("message") or raw[:500].decode("utf-8", "replace") or f"Upstream error {status}")
    message = message.replace(call.target.upstream_model, call.parsed.model_id) if call.target else message
    code = inner.get("code")
    if not isinstance(code, str):
        code = None  # vLLM puts the HTTP status there (400), which is no OpenAI error code
    if status == 400 and "maximum context length" in message:
        code = "context_length_exceeded"  # OpenAI's code for a prompt (plus completion) beyond the context window
    param = inner.get("param")
    return GatewayError(
        status,
        message,
        type="invalid_request_error" if status < 500 else "server_error",
        code=code,
        param=param if isinstance(param, str) else None,
    )


def _usage_tokens(call: Call) -> tuple[int, int, int]:
    data = call.usage
    if data:
        details = data.get("prompt_tokens_details") or {}
        return (
            int(data.get("prompt_tokens") or 0),
            int(data.get("completion_tokens") or 0),
            int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
        )
    if call.ttft_ms is not None and call.endpoint != "embeddings":
        # The stream ended without the usage chunk (aborted or cut): the prompt by estimate, the streamed tokens.
        return typical_prompt_tokens(call.parsed.prompt_text), call.streamed_tokens, 0
    return 0, 0, 0


async def _finalize(call: Call) -> None:
    """Settle the reservation to the real usage and queue the usage record (once per call)."""
    if call.finalized:
        return
    call.finalized = True
    call.latency_ms = call.elapsed_ms()
    call.uncount()  # fired: goes out in the settlement's write
    prompt, completion, cached = _usage_tokens(call)
    target = call.target
    price = target.price_at(call.started_at) if target is not None and target.public else None
    if price is not None:
        call.cost = token_amount(price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    parsed = call.parsed
    service_id = target.service_ids[0] if target is not None and len(target.service_ids) == 1 else None
    record = {
        "id": call.request_id,
        "org_id": call.org.id,
        "api_key_id": call.key.id if call.key else None,
        "user_id": call.user_id,
        "source": call.source,
        "endpoint": call.endpoint,
        "model_id": parsed.model_id,
        "catalog_model_id": target.catalog_model_id if target else None,
        "service_id": service_id,
        "public": bool(target and target.public),
        "replica": getattr(call.replica, "replica", "") or "",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "latency_ms": call.latency_ms,
        "ttft_ms": call.ttft_ms,
        "status": call.status,
        "http_status": call.http_status,
        "error_code": call.error_code,
        "stream": parsed.stream,
        "prompt_hash": hashlib.sha256(parsed.prompt_text.encode("utf-8", "surrogatepass")).hexdigest()
        if parsed.prompt_text
        else "",
        "params": parsed.params,
        "served_model_version": call.served_version,
        "cost": str(call.cost) if call.cost is not None else None,
        "currency": price.currency if price is not None else "",
        "started_at": call.started_at,
        "finished_at": call.started_at + call.latency_ms / 1000,
    }
    try:
        await admission.settle_and_record(
            call.admission,
            actual_tokens=prompt + completion,
            actual_cost=call.cost,
            stream=usage.stream_key(),
            entry=orjson.dumps(record),
        )
    except store.REDIS_ERRORS as exc:  # the outage is logged once, not per request
        store.redis_failed(exc)
    except Exception as exc:
        logger.error("metering %s failed: %r", call.request_id, exc)


class StreamRelay:
    """Turns upstream SSE bytes into what the client sees: model id rewritten, usage chunk captured."""

    def __init__(self, call: Call):
        assert call.target is not None
        self.call = call
        call.relay = self
        self.upstream_model = b'"model":' + orjson.dumps(call.target.upstream_model)
        self.client_model = b'"model":' + orjson.dumps(call.parsed.model_id)
        self.pass_usage = call.parsed.client_usage
        self.finished = False
        self.buffer = b""

    def event(self, event: bytes) -> bytes | None:
        call = self.call
        if event.startswith(b"data: [DONE]"):
            self.finished = True
            return event
        if b'"usage":{' in event and b'"choices":[]' in event:
            try:
                data = orjson.loads(event[event.index(b"{") :])
                call.usage = data.get("usage")
                call.served_version = str(data.get("system_fingerprint") or data.get("model") or "")[:200]
            except (ValueError, orjson.JSONDecodeError):
                pass
            if not self.pass_usage:
                return None
        elif (b'"content":"' in event and b'"content":""' not in event) or (
            b'"text":"' in event and b'"text":""' not in event
        ):
            call.streamed_tokens += 1
            if call.streamed_tokens >= call.progress_next:
                call.progress()
        if self.upstream_model in event:
            return event.replace(self.upstream_model, self.client_model)
        return event

    def feed(self, data: bytes) -> bytes | None:
        """What the client sees of ``data`` (completed SSE events, rewritten, as one piece), or None for now."""
        self.call.mark_first_byte()
        buffer = self.buffer + data if self.buffer else data
        out = []
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            piece = self.event(buffer[: end + 2])
            buffer = buffer[end + 2 :]
            if piece is not None:
                out.append(piece)
        self.buffer = buffer
        if not out:
            return None
        return b"".join(out) if len(out) > 1 else out[0]

    def tail(self) -> bytes | None:
        """What is left once the upstream body ended (an event without its blank line)."""
        buffer, self.buffer = self.buffer, b""
        return self.event(buffer) if buffer.strip() else None

    async def chunks(self, response: UpstreamResponse) -> AsyncIterator[bytes]:
        """Client-facing bytes per upstream read: everything that arrived, as one piece (no buffering beyond
        completing an SSE event)."""
        next_chunk = response.next_chunk
        feed = self.feed
        while (data := await next_chunk()) is not None:
            piece = feed(data)
            if piece is not None:
                yield piece
        piece = self.tail()
        if piece is not None:
            yield piece


def read_complete(call: Call, raw: bytes) -> bytes:
    """A non-streamed answer with the client's model id; captures usage and the served version."""
    data = orjson.loads(raw)
    if isinstance(data, dict):
        call.usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        call.served_version = str(data.get("system_fingerprint") or data.get("model") or "")[:200]
        if "model" in data:
            data["model"] = call.parsed.model_id
    return orjson.dumps(data)


async def _first_hold(on_waking: Callable[[], Awaitable[None]], tick: int) -> None:
    if tick == 0:
        await on_waking()


async def chat_stream(
    *,
    org,
    model_id: str,
    body: dict,
    user=None,
    api_key=None,
    source: str = "playground",
    on_waking: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[dict]:
    """Stream a chat completion for the playground: chunk dicts, then one summary dict.

    Same routing, limits, budgets and metering as /v1. Raises GatewayError before the first chunk (unknown model
    404, not allowed 403, 429 rate limit or insufficient_quota, 503 no ready replica or a wake that took too long,
    400 bad body). ``on_waking`` is awaited when the request is held while its model wakes from zero instances.
    Cancelling the consuming task closes the upstream request and still records the streamed tokens (status
    "aborted").
    """
    body = dict(body or {})
    body["model"] = model_id
    body["stream"] = True
    parsed = parse("chat.completions", body)
    key = None
    if api_key is not None:
        key = lookups.key_info_from_row(api_key, org=org)
        if not key.active(time.time()):
            raise errors.invalid_api_key("This API key is revoked or expired.")
    call = Call(
        endpoint="chat.completions",
        body=body,
        parsed=parsed,
        org=lookups.org_info(org),
        key=key,
        user_id=getattr(user, "pk", None),
        source=source,
    )
    if on_waking is not None:
        call.on_hold = functools.partial(_first_hold, on_waking)
    try:
        await start(call)
    except GatewayError:
        await call.finish()
        raise
    except BaseException:
        call.client_gone()
        await call.finish()
        raise
    assert call.response is not None
    relay = StreamRelay(call)
    try:
        try:
            async for piece in relay.chunks(call.response):
                for event in piece.split(b"\n\n"):
                    if not event.startswith(b"data: {"):
                        continue
                    data = orjson.loads(event[6:])
                    if not data.get("choices") and data.get("usage"):
                        continue
                    yield data
            call.upstream_ended()
        except UPSTREAM_ERRORS as exc:
            call.upstream_broke(exc)
    except BaseException:  # cancelled, or the consumer closed the generator
        call.client_gone()
        raise
    finally:
        await call.finish()
    prompt, completion, cached = _usage_tokens(call)
    yield {
        "type": "summary",
        "status": call.status,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
        "ttft_ms": call.ttft_ms,
        "latency_ms": call.latency_ms,
        "cost": str(call.cost) if call.cost is not None else None,
        "currency": settings.CURRENCY,
        "replica": getattr(call.replica, "replica", "") or "",
        "request_id": call.request_id,
    }
