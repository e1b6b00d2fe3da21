"""vLLM-compatible engine simulator: a fast fake LLM server speaking vLLM's OpenAI-compatible HTTP API.

The platform runs it in place of ``vllm serve`` when no GPU is present; the gateway routes to it and the benchmarks
measure routing against it. It never imports Django and needs no database.

Command line (every flag of ``python -m simulator --help``)::

    python -m simulator --host 127.0.0.1 --port 8001 --served-model-name NAME [--served-model-name ALIAS]
        --max-model-len 32768 --ttft-ms 80 --itl-ms 15 --prefill-ms-per-1k-tokens 20 --max-num-seqs 256
        --failure-rate 0.0 --fail-mode error|hang|disconnect --disconnect-after-chunks 3
        --prefix-cache/--no-prefix-cache --prefix-cache-speedup 0.8 --prefix-cache-blocks 8192 --block-size 16
        --kv-cache-tokens 524288 --seed 0 --embedding-dim 1024 --model-version sim-v1 --replica-id ID
        --load-seconds 0

It prints ``simulator listening on http://HOST:PORT`` once it accepts connections.

In tests, run one in a background thread on a free port::

    from simulator import SimulatorConfig, run_simulator

    with run_simulator(SimulatorConfig(served_model_names=("llama",), ttft_ms=5, itl_ms=1)) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
        ...

``run_simulator(config=None, *, port=0, wait_healthy=True, timeout=10.0, **overrides)`` yields
``http://127.0.0.1:<port>`` once ``GET /health`` answers 200, and stops the server and joins its thread on exit.
Keyword overrides replace config fields (``run_simulator(ttft_ms=300, failure_rate=1.0)``). Several simulators
can run side by side (one per replica); tell their answers apart by the ``x-simulator-replica`` header
(``--replica-id``, default ``HOST:PORT``).

``create_app(config)`` returns the bare ``aiohttp.web.Application`` for embedding; run it with an ``AppRunner``
created with ``handler_cancellation=True`` so a client that goes away frees its slot at once.

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``,
``POST /v1/embeddings``, ``GET /metrics`` (vLLM metric names), ``POST /reset_prefix_cache`` (as vLLM), and the
simulator's own control surface: ``GET|POST /_sim/config`` (read or JSON-patch ttft_ms, itl_ms,
prefill_ms_per_1k_tokens, max_num_seqs, failure_rate, fail_mode, disconnect_after_chunks, prefix_cache,
prefix_cache_speedup, unhealthy) and ``GET /_sim/stats`` (request, status, abort, fault and prefix-cache counts).

Latency model: a request waits for one of ``max_num_seqs`` slots, then its first token comes after
``(ttft_ms + prefill_ms_per_1k_tokens * prompt_tokens / 1000) * (1 - prefix_cache_speedup * cached / prompt_tokens)``
and each further token ``itl_ms`` later. ``cached`` comes from an LRU of 16-token prompt blocks hashed cumulatively,
as in vLLM's automatic prefix caching, so requests sharing a long prefix are measurably faster on the replica that
served that prefix before.
"""

from .config import FAIL_MODES, SimulatorConfig
from .server import create_app, run_simulator, serve

__all__ = ["FAIL_MODES", "SimulatorConfig", "create_app", "run_simulator", "serve"]
