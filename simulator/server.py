"""aiohttp application of the engine simulator, plus `serve` for the CLI and `run_simulator` for tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion11

from .config import SimulatorConfig
from .engine import Engine
from .protocol import APIError, EmbeddingPlan, GenerationPlan, plan_chat, plan_completion, plan_embedding
from .streaming import StreamEncoder, StreamJob
from .text import embedding_vector, pack_float32

ENGINE = web.AppKey("engine", Engine)
REPLICA_HEADER = "x-simulator-replica"
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"
MAX_BODY_BYTES = 32 * 1024 * 1024


try:
    import orjson
except ImportError:  # orjson is a declared dependency, but the simulator must run from a bare checkout too
    _encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

    def dumps(value: Any) -> bytes:
        return _encoder.encode(value).encode()

    def loads(raw: bytes) -> Any:
        return json.loads(raw)
else:

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    def loads(raw: bytes) -> Any:
        return orjson.loads(raw)


def _json_response(engine: Engine, payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(payload), status=status, content_type="application/json")


def _error_response(engine: Engine, error: APIError) -> web.Response:
    return _json_response(engine, error.body(), error.status)


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


class SimulatorHandlers:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------ plumbing

    async def _read_json(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            raise APIError(400, "request body is empty; expected a JSON object")
        try:
            return loads(raw)
        except ValueError as exc:
            raise APIError(400, f"Invalid JSON body: {exc}") from None

    def _not_ready(self) -> APIError | None:
        if self.engine.loading:
            return APIError(503, "The model is still loading.")
        return None

    # ------------------------------------------------------------ simple endpoints

    async def health(self, request: web.Request) -> web.Response:
        engine = self.engine
        if engine.loading or engine.settings.unhealthy:
            return web.Response(status=503)
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        config = self.engine.config
        root = config.model_name
        data = [
            {
                "id": name,
                "object": "model",
                "created": self.engine.created,
                "owned_by": "vllm",
                "root": root,
                "parent": None,
                "max_model_len": config.max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid5(uuid.NAMESPACE_URL, name).hex}",
                        "object": "model_permission",
                        "created": self.engine.created,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for name in config.served_model_names
        ]
        return _json_response(self.engine, {"object": "list", "data": data})

    async def metrics(self, request: web.Request) -> web.Response:
        engine = self.engine
        text = engine.metrics.render(running=len(engine.running), waiting=engine.waiting, kv_usage=engine.kv_usage())
        return web.Response(
            text=text, content_type="text/plain", charset="utf-8", headers={"X-Content-Type-Options": "nosniff"}
        )

    async def unknown_v1(self, request: web.Request) -> web.Response:
        return _error_response(self.engine, APIError(404, f"Unknown endpoint {request.method} {request.path}"))

    async def sim_stats(self, request: web.Request) -> web.Response:
        return _json_response(self.engine, self.engine.stats())

    async def sim_config_get(self, request: web.Request) -> web.Response:
        return _json_response(self.engine, self.engine.settings.as_dict())

    async def sim_config_post(self, request: web.Request) -> web.Response:
        try:
            patch = await self._read_json(request)
            if not isinstance(patch, dict):
                raise APIError(400, "expected a JSON object of settings")
            try:
                settings = self.engine.patch_settings(patch)
            except ValueError as exc:
                raise APIError(400, str(exc)) from None
        except APIError as error:
            return _error_response(self.engine, error)
        return _json_response(self.engine, settings)

    async def reset_prefix_cache(self, request: web.Request) -> web.Response:
        self.engine.prefix_cache.clear()
        return web.Response(status=200)

    # ------------------------------------------------------------ inference

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, plan_chat)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, plan_completion)

    async def _generate(self, request: web.Request, planner: Any) -> web.StreamResponse:
        engine = self.engine
        arrival = time.monotonic()
        engine.requests_total += 1
        try:
            plan = planner(await self._read_json(request), engine.config)
            error = self._not_ready()
            if error is not None:
                raise error
        except APIError as error:
            return _error_response(engine, error)
        failure = engine.draw_failure()
        if failure == "error":
            return _error_response(engine, APIError(500, "Injected failure (engine simulator fail_mode=error)."))
        if failure == "hang":
            await asyncio.Event().wait()  # until the client disconnects, which cancels this handler
        prefix = "chatcmpl-" if plan.kind == "chat" else "cmpl-"
        request_id = prefix + uuid.uuid4().hex
        disconnect_after = engine.settings.disconnect_after_chunks if failure == "disconnect" else None
        if plan.stream:
            return await self._stream(request, plan, request_id, arrival, disconnect_after)
        return await self._complete(request, plan, request_id, arrival, disconnect_after)

    async def _stream(
        self, request: web.Request, plan: GenerationPlan, request_id: str, arrival: float, disconnect_after: int | None
    ) -> web.StreamResponse:
        engine = self.engine
        metrics = engine.metrics
        response = web.StreamResponse(headers=SSE_HEADERS)
        chunked = request.version >= HttpVersion11
        if chunked:
            response.enable_chunked_encoding()
        encoder = StreamEncoder(plan, request_id, int(time.time()), engine.fingerprint, dumps)
        steps = plan.max_steps
        job: StreamJob | None = None
        emitted = 0
        finished = False
        sequence = None
        try:
            # aiohttp buffers the headers until the first chunk, so errors up to then can still be clean 5xx.
            await response.prepare(request)
            sequence = await engine.admit(plan.prompt_tokens)
            cached = engine.prefix_lookup(plan)
            itl = engine.settings.itl_ms / 1000.0
            await asyncio.sleep(engine.ttft_seconds(plan.prompt_tokens, cached))
            engine.prefix_insert(plan)
            metrics.ttft.observe(time.monotonic() - arrival)
            loop = asyncio.get_running_loop()
            first_at = loop.time()
            if disconnect_after == 0:
                self._cut_connection(request)
                return response
            await response.write(encoder.chunk(0))
            emitted = 1
            sequence.kv_tokens += 1
            cut_after = disconnect_after if disconnect_after is not None and disconnect_after < steps else None
            if steps > 1 and cut_after != 1:
                transport = request.transport
                if transport is None:  # aiohttp lets go of the transport once the client has gone
                    raise ConnectionResetError("client disconnected")
                job = StreamJob(
                    encoder=encoder,
                    transport=transport,
                    chunked=chunked,
                    steps=steps,
                    first_at=first_at,
                    itl=itl,
                    itl_histogram=metrics.itl,
                    sequence=sequence,
                    cut_after=cut_after,
                    future=loop.create_future(),
                )
                engine.clock().schedule(job, first_at + itl)
                await job.future
            if disconnect_after is not None:
                self._cut_connection(request)
                return response
            tail = DONE
            if plan.include_usage:
                tail = encoder.usage_chunk(_usage(plan.prompt_tokens, plan.completion_tokens, cached)) + DONE
            await response.write(tail)
            finished = True
        except ConnectionError:
            # The client went away mid-stream (a write failed): stop generating; aiohttp drops the connection.
            engine.requests_aborted += 1
            metrics.request_success["abort"] += 1
        except asyncio.CancelledError:
            # The client went away while we waited (handler cancellation) or the server is shutting down.
            engine.requests_aborted += 1
            metrics.request_success["abort"] += 1
            raise
        finally:
            if sequence is not None:
                engine.release(sequence)
                metrics.prompt_tokens += plan.prompt_tokens
                if finished:
                    emitted = plan.completion_tokens
                elif job is not None:
                    emitted = job.step
                metrics.generation_tokens += emitted
            if finished:
                engine.requests_completed += 1
                metrics.e2e.observe(time.monotonic() - arrival)
                for choice in plan.choices:
                    metrics.request_success[choice.finish_reason] += 1
        return response

    async def _complete(
        self, request: web.Request, plan: GenerationPlan, request_id: str, arrival: float, disconnect_after: int | None
    ) -> web.StreamResponse:
        engine = self.engine
        metrics = engine.metrics
        try:
            sequence = await engine.admit(plan.prompt_tokens)
        except asyncio.CancelledError:
            engine.requests_aborted += 1
            metrics.request_success["abort"] += 1
            raise
        try:
            cached = engine.prefix_lookup(plan)
            itl = engine.settings.itl_ms / 1000.0
            await asyncio.sleep(engine.ttft_seconds(plan.prompt_tokens, cached))
            engine.prefix_insert(plan)
            metrics.ttft.observe(time.monotonic() - arrival)
            steps = plan.max_steps
            sequence.kv_tokens += steps
            if steps > 1:
                await asyncio.sleep(itl * (steps - 1))
                metrics.itl.observe(itl, steps - 1)
            if disconnect_after is not None:
                self._cut_connection(request)
                return web.Response(status=500)  # never sent (nor counted): the transport is already closed
        except asyncio.CancelledError:
            engine.requests_aborted += 1
            metrics.request_success["abort"] += 1
            raise
        finally:
            engine.release(sequence)
            metrics.prompt_tokens += plan.prompt_tokens
        metrics.generation_tokens += plan.completion_tokens
        engine.requests_completed += 1
        metrics.e2e.observe(time.monotonic() - arrival)
        created = int(time.time())
        choices = []
        for choice in plan.choices:
            metrics.request_success[choice.finish_reason] += 1
            if plan.kind == "chat":
                choices.append(
                    {
                        "index": choice.index,
                        "message": {"role": "assistant", "content": choice.text, "tool_calls": []},
                        "logprobs": None,
                        "finish_reason": choice.finish_reason,
                        "stop_reason": choice.stop_reason,
                    }
                )
            else:
                choices.append(
                    {
                        "index": choice.index,
                        "text": choice.text,
                        "logprobs": None,
                        "finish_reason": choice.finish_reason,
                        "stop_reason": choice.stop_reason,
                    }
                )
        body = {
            "id": request_id,
            "object": "chat.completion" if plan.kind == "chat" else "text_completion",
            "created": created,
            "model": plan.model,
            "system_fingerprint": engine.fingerprint,
            "choices": choices,
            "usage": _usage(plan.prompt_tokens, plan.completion_tokens, cached),
        }
        return _json_response(engine, body)

    @staticmethod
    def _cut_connection(request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.close()

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        engine = self.engine
        arrival = time.monotonic()
        engine.requests_total += 1
        try:
            plan: EmbeddingPlan = plan_embedding(await self._read_json(request), engine.config)
            error = self._not_ready()
            if error is not None:
                raise error
        except APIError as error:
            return _error_response(engine, error)
        failure = engine.draw_failure()
        if failure == "error":
            return _error_response(engine, APIError(500, "Injected failure (engine simulator fail_mode=error)."))
        if failure == "hang":
            await asyncio.Event().wait()
        sequence = await engine.admit(plan.prompt_tokens)
        try:
            await asyncio.sleep(engine.prefill_seconds(plan.prompt_tokens))
            if failure == "disconnect":
                self._cut_connection(request)
                return web.Response(status=500)
        except asyncio.CancelledError:
            engine.requests_aborted += 1
            raise
        finally:
            engine.release(sequence)
        engine.metrics.prompt_tokens += plan.prompt_tokens
        engine.requests_completed += 1
        engine.metrics.e2e.observe(time.monotonic() - arrival)
        data = []
        for index, seed in enumerate(plan.seeds):
            vector = embedding_vector(seed, engine.config.embedding_dim)
            if plan.dimensions < len(vector):
                head = vector[: plan.dimensions]
                norm = sum(v * v for v in head) ** 0.5 or 1.0
                vector = [v / norm for v in head]
            value: Any = vector
            if plan.encoding_format == "base64":
                value = base64.b64encode(pack_float32(vector)).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": value})
        body = {
            "id": "embd-" + uuid.uuid4().hex,
            "object": "list",
            "created": int(time.time()),
            "model": plan.model,
            "data": data,
            "usage": {
                "prompt_tokens": plan.prompt_tokens,
                "total_tokens": plan.prompt_tokens,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
            },
        }
        return _json_response(engine, body)


def create_app(config: SimulatorConfig) -> web.Application:
    """The simulator as an aiohttp application; run it with an AppRunner created with handler_cancellation=True."""
    engine = Engine(config)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[ENGINE] = engine
    handlers = SimulatorHandlers(engine)

    async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[REPLICA_HEADER] = engine.replica_id
        transport = request.transport
        if request.path.startswith("/v1/") and transport is not None and not transport.is_closing():
            engine.count_status(response.status)

    app.on_response_prepare.append(on_response_prepare)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_post("/v1/completions", handlers.completions)
    app.router.add_post("/v1/embeddings", handlers.embeddings)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_post("/reset_prefix_cache", handlers.reset_prefix_cache)
    app.router.add_get("/_sim/stats", handlers.sim_stats)
    app.router.add_get("/_sim/config", handlers.sim_config_get)
    app.router.add_post("/_sim/config", handlers.sim_config_post)
    app.router.add_route("*", "/v1/{tail:.*}", handlers.unknown_v1)
    return app


def _bound_port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]


async def _start(config: SimulatorConfig, *, shutdown_timeout: float) -> tuple[web.AppRunner, str]:
    app = create_app(config)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=4096, reuse_address=True)
    await site.start()
    port = _bound_port(runner)
    engine = app[ENGINE]
    if config.replica_id is None:
        engine.replica_id = f"{config.host}:{port}"
    host = f"[{config.host}]" if ":" in config.host else config.host
    return runner, f"http://{host}:{port}"


async def serve(config: SimulatorConfig) -> None:
    """Run until cancelled (the CLI cancels on SIGINT/SIGTERM)."""
    runner, base_url = await _start(config, shutdown_timeout=2.0)
    # Everything allocated so far lives for the whole run: keep it out of the collector's full passes, which
    # otherwise stall every stream for tens of milliseconds under load.
    gc.freeze()
    print(f"simulator listening on {base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _SimulatorThread(threading.Thread):
    def __init__(self, config: SimulatorConfig) -> None:
        super().__init__(name=f"engine-simulator-{config.model_name}", daemon=True)
        self.config = config
        self.loop = new_event_loop()
        self.started_event = threading.Event()
        self.base_url: str | None = None
        self.error: BaseException | None = None
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        try:
            runner, self.base_url = await _start(self.config, shutdown_timeout=0.5)
        except BaseException as exc:  # surfaced to the caller by run_simulator
            self.error = exc
            self.started_event.set()
            return
        self.started_event.set()
        try:
            await self._stop_event.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        if self._stop_event is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop_event.set)


def _health_status(base_url: str, timeout: float) -> int | None:
    host_port = base_url.removeprefix("http://")
    host, _, port = host_port.rpartition(":")
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


@contextlib.contextmanager
def run_simulator(
    config: SimulatorConfig | None = None,
    *,
    port: int = 0,
    wait_healthy: bool = True,
    timeout: float = 10.0,
    **overrides: Any,
) -> Iterator[str]:
    """Run a simulator in a background thread and yield its base URL (``http://127.0.0.1:<port>``, no ``/v1``).

    `port=0` picks a free port; `overrides` replace fields of `config` (``run_simulator(ttft_ms=5)``). On entry it
    waits until ``GET /health`` answers 200 (or, with ``wait_healthy=False``, answers at all, for testing
    ``load_seconds``); on exit it stops the server, cancelling in-flight requests, and joins the thread.
    """
    config = replace(config or SimulatorConfig(), port=port, **overrides)
    thread = _SimulatorThread(config)
    thread.start()
    try:
        if not thread.started_event.wait(timeout):
            raise RuntimeError(f"engine simulator did not start within {timeout} s")
        if thread.error is not None:
            raise RuntimeError(f"engine simulator failed to start: {thread.error!r}") from thread.error
        assert thread.base_url is not None
        deadline = time.monotonic() + timeout
        while True:
            status = _health_status(thread.base_url, timeout=1.0)
            if status == 200 or (status is not None and not wait_healthy):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"engine simulator at {thread.base_url} not healthy within {timeout} s")
            time.sleep(0.02)
        yield thread.base_url
    finally:
        thread.stop()
        thread.join(timeout=10)
